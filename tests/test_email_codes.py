"""Converting a guest without a password (CONTRACT §6): the six-digit code of the conversion email
typed in the guest's own session (``email_code``), or the setup link alone (``email_link``); codes
keyed, counted, single use and expiring."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.credentials.email_codes import CODE_SECRET
from app.outbox.retention import remove_expired
from tests.account_support import (
    PASSWORD,
    bare_client,
    bearer,
    code_in,
    fresh_email,
    last_code,
    new_guest,
    outbox_emails,
    register,
    request_conversion,
    wrong,
)
from tests.conftest import make_settings, running_app
from tests.outbox_support import private_engine


async def _user_row(engine: AsyncEngine, user_id: str) -> sa.Row:
    async with engine.connect() as conn:
        return (
            await conn.execute(sa.text("SELECT * FROM users WHERE id = :id"), {"id": user_id})
        ).one()


async def _events(engine: AsyncEngine, user_id: str, event_type: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT payload FROM events WHERE user_id = :id AND type = :type"),
            {"id": user_id, "type": event_type},
        )
        return [r.payload for r in rows]


async def _verify(client: httpx.AsyncClient, code: str, **kwargs: Any) -> httpx.Response:
    return await client.post("/v1/me/conversion/verify", json={"code": code}, **kwargs)


async def _pending_guest(
    client: httpx.AsyncClient, engine: AsyncEngine, tag: str, data: dict[str, Any] | None = None
) -> tuple:
    guest = await new_guest(client)
    if data is not None:
        assert (await client.put("/v1/me/data", json=data)).status_code == 200
    email = fresh_email(tag)
    assert (await request_conversion(client, email)).status_code == 202
    token, code = await last_code(engine, email, "conversion_setup")
    return guest, email, token, code


async def test_code_conversion_keeps_id_and_data_and_needs_no_password(
    app: FastAPI, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    guest = await new_guest(client)
    await client.put("/v1/me/data", json={"cart": [1, 2], "theme": "dark"})
    old_cookie = client.cookies["anonid_session"]
    email = fresh_email("bycode")
    await request_conversion(client, email)
    [sent] = await outbox_emails(engine, email, "conversion_setup")
    code = code_in(sent)
    assert code in sent["html"] and "/account/setup?token=" in sent["html"]

    r = await _verify(client, code)
    assert r.status_code == 200, r.text
    user = r.json()["user"]
    assert user["id"] == guest["id"] and user["data"] == {"cart": [1, 2], "theme": "dark"}
    assert user["state"] == "registered" and user["is_anonymous"] is False
    assert user["email"] == email and user["email_verified"] is True
    assert user["username"] is None and user["pending_email"] is None
    assert user["methods"] == ["email"]
    assert client.cookies["anonid_session"] != old_cookie
    assert (await client.get("/v1/me")).json()["id"] == guest["id"]

    row = await _user_row(engine, guest["id"])
    assert row.password_hash is None and row.converted_at is not None
    assert row.session_version == 2
    assert await _events(engine, guest["id"], "user.converted") == [
        {"id": guest["id"], "method": "email_code"}
    ]
    # The code was single use (and the caller is registered now).
    again = await _verify(client, code)
    assert again.status_code == 409 and again.json()["error"] == "already_registered"
    # The guest's cookie from before is refused: the conversion ended every other session.
    client.cookies.clear()
    stale = await client.get("/v1/me", headers={"Cookie": f"anonid_session={old_cookie}"})
    assert stale.status_code == 401


async def test_the_code_is_kept_only_as_a_keyed_hash(
    app: FastAPI, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    guest, _, token, code = await _pending_guest(client, engine, "keyed")
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT token_hash, code_hash, code_expires_at - created_at AS ttl"
                    " FROM link_tokens WHERE user_id = :id"
                ),
                {"id": guest["id"]},
            )
        ).one()
        key = await conn.scalar(
            sa.text("SELECT value FROM server_secrets WHERE name = :n"), {"n": CODE_SECRET}
        )
    token_hash = hashlib.sha256(token.encode()).digest()
    assert bytes(row.token_hash) == token_hash
    assert bytes(row.code_hash) != hashlib.sha256(code.encode()).digest()
    expected = hmac.new(
        bytes(key), b"anonid-email-code\0" + token_hash + code.encode(), hashlib.sha256
    ).digest()
    assert bytes(row.code_hash) == expected
    assert row.ttl.total_seconds() == 10 * 60  # ANONID_EMAIL_CODE_TTL_MINUTES


async def test_a_wrong_code_five_times_kills_it_even_if_the_sixth_is_right(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    guest, _, _, code = await _pending_guest(client, engine, "fivewrong")
    for _ in range(5):
        r = await _verify(client, wrong(code))
        assert r.status_code == 400 and r.json()["error"] == "invalid_code"
    r = await _verify(client, code)
    assert r.status_code == 400 and r.json()["error"] == "invalid_code"
    assert (await _user_row(engine, guest["id"])).is_anonymous


async def test_four_wrong_codes_leave_the_fifth_try_to_the_right_one(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    _, _, _, code = await _pending_guest(client, engine, "fourwrong")
    for _ in range(4):
        assert (await _verify(client, wrong(code))).status_code == 400
    assert (await _verify(client, code)).status_code == 200


async def test_eight_concurrent_verifications_of_one_code_succeed_exactly_once(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as owner:
        r = await owner.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})
        guest, token = r.json()["user"], r.json()["access_token"]
        email = fresh_email("race8")
        r = await owner.post("/v1/me/conversion", json={"email": email}, headers=bearer(token))
        assert r.status_code == 202
    _, code = await last_code(engine, email, "conversion_setup")

    async def verify() -> httpx.Response:
        async with bare_client(app) as c:
            return await _verify(c, code, headers={**bearer(token), "X-Anonid-Token": "bearer"})

    results = await asyncio.gather(*(verify() for _ in range(8)))
    statuses = [r.status_code for r in results]
    assert statuses.count(200) == 1, [(r.status_code, r.text) for r in results]
    # The others lost: the code is used (400), or the guest's session moved on with it (401).
    assert all(s in (400, 401) for s in statuses if s != 200)
    row = await _user_row(engine, guest["id"])
    assert not row.is_anonymous and row.session_version == 2
    assert len(await _events(engine, guest["id"], "user.converted")) == 1


async def test_an_expired_code_is_410_and_a_wrong_expired_code_is_just_wrong(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    guest, _, _, code = await _pending_guest(client, engine, "expired")
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE link_tokens SET code_expires_at = now() - interval '1 second'"
                " WHERE user_id = :id"
            ),
            {"id": guest["id"]},
        )
    r = await _verify(client, code)
    assert r.status_code == 410 and r.json()["error"] == "code_expired"
    r = await _verify(client, wrong(code))
    assert r.status_code == 400 and r.json()["error"] == "invalid_code"
    assert (await _user_row(engine, guest["id"])).is_anonymous


async def test_a_code_works_only_in_the_guest_session_that_asked_for_it(
    app: FastAPI, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    _, _, _, code = await _pending_guest(client, engine, "bound")
    async with bare_client(app) as other:
        await new_guest(other)
        r = await _verify(other, code)
        assert r.status_code == 400 and r.json()["error"] == "invalid_code"
        other.cookies.clear()
        assert (await _verify(other, code)).status_code == 401
    assert (await _verify(client, code)).status_code == 200
    async with bare_client(app) as registered:
        await register(registered, engine)
        r = await _verify(registered, code)
        assert r.status_code == 409 and r.json()["error"] == "already_registered"


async def test_malformed_codes_are_invalid_and_spend_no_attempt(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    _, _, _, code = await _pending_guest(client, engine, "malformed")
    for bad in ("", "12345", "1234567", "abcdef", "١٢٣٤٥٦", "x" * 5000):
        r = await _verify(client, bad)
        assert r.status_code == 400 and r.json()["error"] == "invalid_code", bad
    r = await client.post("/v1/me/conversion/verify", json={"code": 123456})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    # Spaces and dashes a person types are fine.
    assert (await _verify(client, f"{code[:3]} {code[3:]}")).status_code == 200


async def test_a_new_request_retires_the_earlier_code_but_not_the_earlier_link(
    app: FastAPI, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await new_guest(client)
    email = fresh_email("again")
    await request_conversion(client, email)
    first_token, first_code = await last_code(engine, email, "conversion_setup")
    await request_conversion(client, email)
    _, second_code = await last_code(engine, email, "conversion_setup")
    if first_code != second_code:  # one in a million they are the same digits
        r = await _verify(client, first_code)
        assert r.status_code == 400 and r.json()["error"] == "invalid_code"
    async with bare_client(app) as other:
        r = await other.post("/v1/conversion/confirm", json={"token": first_token})
        assert r.status_code == 200 and r.json()["user"]["email"] == email


async def test_code_conversion_to_an_address_taken_meanwhile_is_409_and_leaves_the_guest(
    app: FastAPI, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    guest, email, _, code = await _pending_guest(client, engine, "takenlate", {"kept": True})
    async with bare_client(app) as fast:
        await register(fast, engine, email)
    r = await _verify(client, code)
    assert r.status_code == 409 and r.json()["error"] == "email_taken"
    row = await _user_row(engine, guest["id"])
    assert row.is_anonymous and row.email is None and row.session_version == 1
    assert row.username == guest["username"]
    me = await client.get("/v1/me")
    assert me.status_code == 200 and me.json()["data"] == {"kept": True}


async def test_the_setup_link_without_a_password_registers_the_guest_in_place(
    app: FastAPI, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    guest, email, token, code = await _pending_guest(
        client, engine, "bylink", {"wishlist": ["book"]}
    )
    async with bare_client(app) as phone:
        r = await phone.post("/v1/conversion/confirm", json={"token": token})
        assert r.status_code == 200, r.text
        user = r.json()["user"]
        assert user["id"] == guest["id"] and user["data"] == {"wishlist": ["book"]}
        assert user["email"] == email and user["methods"] == ["email"]
        assert [c.split("=", 1)[0] for c in r.headers.get_list("set-cookie")] == [
            "anonid_session",
            "anonid_refresh",
        ]
        again = await phone.post("/v1/conversion/confirm", json={"token": token})
        assert again.status_code == 400 and again.json()["error"] == "invalid_token"
        # The setup link serves both endpoints, once in all.
        r = await phone.post("/v1/password-setup", json={"token": token, "password": PASSWORD})
        assert r.status_code == 400 and r.json()["error"] == "invalid_token"
    assert (await _user_row(engine, guest["id"])).password_hash is None
    assert await _events(engine, guest["id"], "user.converted") == [
        {"id": guest["id"], "method": "email_link"}
    ]
    # The code of the same email ended with the link (and the guest's session with the guest).
    assert (await _verify(client, code)).status_code == 401


async def test_conversion_confirm_refuses_other_links_and_expired_ones(
    app: FastAPI, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        for token in ("nope", "", "x" * 500):
            r = await c.post("/v1/conversion/confirm", json={"token": token})
            assert r.status_code == 400 and r.json()["error"] == "invalid_token"
        r = await c.post("/v1/conversion/confirm", json={})
        assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    guest, _, token, _ = await _pending_guest(client, engine, "linkexpired")
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE link_tokens SET expires_at = now() - interval '1 second'"
                " WHERE user_id = :id"
            ),
            {"id": guest["id"]},
        )
    async with bare_client(app) as c:
        r = await c.post("/v1/conversion/confirm", json={"token": token})
        assert r.status_code == 410 and r.json()["error"] == "token_expired"


async def test_password_setup_records_its_method_too(app: FastAPI, engine: AsyncEngine) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
    assert account["methods"] == ["password", "email"]
    assert await _events(engine, account["id"], "user.converted") == [
        {"id": account["id"], "method": "password"}
    ]


async def test_spent_and_expired_codes_go_with_retention(server_url: str) -> None:
    async with private_engine(server_url) as (url, engine):
        settings = make_settings(url)
        async with running_app(settings) as application:
            rows = {}
            for name in ("spent", "expired", "live"):
                async with bare_client(application) as c:
                    guest, _, _, _ = await _pending_guest(c, engine, f"retained-{name}")
                    rows[name] = guest["id"]
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text(
                        "UPDATE link_tokens SET used_at = now() - interval '8 days'"
                        " WHERE user_id = :id"
                    ),
                    {"id": rows["spent"]},
                )
                await conn.execute(
                    sa.text(
                        "UPDATE link_tokens SET expires_at = now() - interval '8 days',"
                        " code_expires_at = now() - interval '8 days' WHERE user_id = :id"
                    ),
                    {"id": rows["expired"]},
                )
            removed = await remove_expired(engine, settings)
            assert removed["link_tokens"] == 2
            async with engine.connect() as conn:
                left = set(
                    await conn.scalars(
                        sa.text("SELECT user_id::text FROM link_tokens WHERE code_hash IS NOT NULL")
                    )
                )
            assert left == {rows["live"]}
