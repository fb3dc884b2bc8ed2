"""Conversion (CONTRACT §6): request, cancel, redeem exactly once, taken addresses, link rules."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.platform.db import create_engine
from tests.account_support import (
    PASSWORD,
    bare_client,
    fresh_email,
    last_token,
    link_in,
    new_guest,
    outbox_emails,
    register,
    request_conversion,
    token_of,
)
from tests.conftest import make_settings, running_app
from tests.mailserver import MailServer, html_of, links_in
from tests.outbox_support import private_database, running_worker


async def _user_row(engine: AsyncEngine, user_id: str) -> sa.Row:
    async with engine.connect() as conn:
        return (
            await conn.execute(sa.text("SELECT * FROM users WHERE id = :id"), {"id": user_id})
        ).one()


async def _redeem(
    client: httpx.AsyncClient, token: str, password: str = PASSWORD
) -> httpx.Response:
    return await client.post("/v1/password-setup", json={"token": token, "password": password})


async def test_conversion_keeps_id_and_data_and_retires_the_guest_session(
    app: FastAPI, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    guest = await new_guest(client)
    guest_cookie = client.cookies["anonid_session"]
    await client.put("/v1/me/data", json={"cart": [1, 2], "theme": "dark"})
    typed = fresh_email("Convert")
    email = typed.lower()  # every address is kept in its one normal form (lower case)

    r = await request_conversion(client, typed)
    assert r.status_code == 202
    assert r.json() == {"state": "pending", "pending_email": email}
    me = (await client.get("/v1/me")).json()
    assert me["state"] == "pending" and me["pending_email"] == email and me["email"] is None
    row = await _user_row(engine, guest["id"])
    assert row.email is None and row.pending_email == email and row.is_anonymous

    emails = await outbox_emails(engine, email, "conversion_setup")
    assert len(emails) == 1
    link = link_in(emails[0])
    assert link.startswith("https://anonid.test/account/setup?token=")
    token = token_of(link)
    assert len(token) >= 43  # 256 bits, base64url
    async with engine.connect() as conn:
        stored = list(
            await conn.scalars(
                sa.text("SELECT token_hash FROM link_tokens WHERE user_id = :id"),
                {"id": guest["id"]},
            )
        )
    assert stored == [hashlib.sha256(token.encode()).digest()]  # only the hash is kept

    async with bare_client(app) as other_device:
        r = await _redeem(other_device, token)
        assert r.status_code == 200, r.text
        user = r.json()["user"]
        assert user["id"] == guest["id"]
        assert user["data"] == {"cart": [1, 2], "theme": "dark"}
        assert user["state"] == "registered" and user["is_anonymous"] is False
        assert user["email"] == email and user["email_verified"] is True
        assert user["username"] is None and user["pending_email"] is None
        assert "anonid_session=" in r.headers["set-cookie"]
        assert (await other_device.get("/v1/me")).json()["id"] == guest["id"]

        again = await _redeem(other_device, token)
        assert again.status_code == 400 and again.json()["error"] == "invalid_token"

    client.cookies.clear()
    stale = await client.get("/v1/me", headers={"Cookie": f"anonid_session={guest_cookie}"})
    assert stale.status_code == 401 and stale.json()["error"] == "invalid_session"

    row = await _user_row(engine, guest["id"])
    assert row.converted_at is not None and row.session_version == 2
    assert row.password_hash.startswith("$argon2id$")
    assert row.pending_email is None and row.pending_until is None
    async with engine.connect() as conn:
        types = set(
            await conn.scalars(
                sa.text("SELECT type FROM events WHERE user_id = :id"), {"id": guest["id"]}
            )
        )
    assert {"user.conversion_started", "user.converted"} <= types


async def test_sixteen_concurrent_redeems_of_one_link_give_exactly_one_success(
    app: FastAPI, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    guest = await new_guest(client)
    email = fresh_email("race")
    await request_conversion(client, email)
    token = await last_token(engine, email, "conversion_setup")

    async def click() -> httpx.Response:
        async with bare_client(app) as c:
            return await _redeem(c, token)

    results = await asyncio.gather(*(click() for _ in range(16)))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] + [400] * 15
    assert {r.json()["error"] for r in results if r.status_code == 400} == {"invalid_token"}
    row = await _user_row(engine, guest["id"])
    assert row.session_version == 2  # promoted once, not sixteen times
    async with engine.connect() as conn:
        converted = await conn.scalar(
            sa.text("SELECT count(*) FROM events WHERE user_id = :id AND type = 'user.converted'"),
            {"id": guest["id"]},
        )
    assert converted == 1


async def test_two_guests_racing_for_one_address_one_wins_and_the_loser_is_untouched(
    app: FastAPI, engine: AsyncEngine
) -> None:
    email = fresh_email("contested")
    guests = []
    for data in ({"who": "a"}, {"who": "b"}):
        c = bare_client(app)
        guest = await new_guest(c)
        await c.put("/v1/me/data", json=data)
        assert (await request_conversion(c, email)).status_code == 202
        tokens = await outbox_emails(engine, email, "conversion_setup")
        guests.append((c, guest, token_of(link_in(tokens[-1]))))

    async def redeem(token: str) -> httpx.Response:
        async with bare_client(app) as c:
            return await _redeem(c, token)

    results = await asyncio.gather(*(redeem(t) for _, _, t in guests))
    assert sorted(r.status_code for r in results) == [200, 409]
    loser_index = [r.status_code for r in results].index(409)
    assert results[loser_index].json()["error"] == "email_taken"

    loser_client, loser, _ = guests[loser_index]
    row = await _user_row(engine, loser["id"])
    assert row.is_anonymous and row.email is None and row.password_hash is None
    assert row.username == loser["username"] and row.session_version == 1
    assert row.converted_at is None
    me = await loser_client.get("/v1/me")
    assert me.status_code == 200 and me.json()["data"] == {"who": "ab"[loser_index]}
    for c, _, _ in guests:
        await c.aclose()


async def test_taken_and_free_addresses_get_identical_answers_and_the_owner_is_told(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as owner_client:
        owner = await register(owner_client, engine)
    setup_mails_before = len(await outbox_emails(engine, owner["email"], "conversion_setup"))
    free = fresh_email("free")

    async with bare_client(app) as taken_client, bare_client(app) as free_client:
        taken_guest = await new_guest(taken_client)
        await new_guest(free_client)
        # Same address modulo case, so the owner's unique (case-insensitive) email is the match;
        # both answers show the address in its normal form (lower case).
        taken_address = owner["email"].upper().replace("@EXAMPLE.ORG", "@example.org")
        r_taken = await request_conversion(taken_client, taken_address)
        r_free = await request_conversion(free_client, free)
        assert r_taken.status_code == r_free.status_code == 202
        taken_address = owner["email"]
        assert r_taken.json() == {"state": "pending", "pending_email": taken_address}
        assert r_free.json() == {"state": "pending", "pending_email": free}
        assert r_taken.headers.get("cache-control") == r_free.headers.get("cache-control")

        me_taken = (await taken_client.get("/v1/me")).json()
        me_free = (await free_client.get("/v1/me")).json()
        for key in ("state", "is_anonymous", "email", "email_verified", "data"):
            assert me_taken[key] == me_free[key], key
        assert me_taken["state"] == "pending" and me_taken["pending_email"] == taken_address

    # No link for the taken address; its owner hears about the attempt instead.
    assert (
        len(await outbox_emails(engine, owner["email"], "conversion_setup")) == setup_mails_before
    )
    notes = await outbox_emails(engine, owner["email"], "conversion_already_registered")
    assert len(notes) == 1
    assert "https://anonid.test/account/login" in notes[0]["text"]
    async with engine.connect() as conn:
        links = await conn.scalar(
            sa.text("SELECT count(*) FROM link_tokens WHERE user_id = :id"),
            {"id": taken_guest["id"]},
        )
    assert links == 0
    assert len(await outbox_emails(engine, free, "conversion_setup")) == 1


async def test_address_taken_after_the_request_gives_409_and_keeps_the_guest(
    app: FastAPI, engine: AsyncEngine
) -> None:
    email = fresh_email("late")
    async with bare_client(app) as slow:
        guest = await new_guest(slow)
        await request_conversion(slow, email)
        token = await last_token(engine, email, "conversion_setup")
        async with bare_client(app) as fast:
            await register(fast, engine, email)
        r = await _redeem(slow, token)
        assert r.status_code == 409 and r.json()["error"] == "email_taken"
        row = await _user_row(engine, guest["id"])
        assert row.is_anonymous and row.email is None and row.session_version == 1
        assert (await slow.get("/v1/me")).status_code == 200


async def test_expired_setup_link_answers_410(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    guest = await new_guest(client)
    email = fresh_email("expired")
    await request_conversion(client, email)
    token = await last_token(engine, email, "conversion_setup")
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE link_tokens SET expires_at = now() - interval '1 second' WHERE user_id = :id"
            ),
            {"id": guest["id"]},
        )
    client.cookies.clear()
    r = await _redeem(client, token)
    assert r.status_code == 410 and r.json()["error"] == "token_expired"
    assert (await _user_row(engine, guest["id"])).is_anonymous


async def test_cancel_makes_outstanding_links_stop_working(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    guest = await new_guest(client)
    email = fresh_email("cancel")
    await request_conversion(client, email)
    token = await last_token(engine, email, "conversion_setup")
    r = await client.delete("/v1/me/conversion")
    assert r.status_code == 204
    me = (await client.get("/v1/me")).json()
    assert me["state"] == "anonymous" and me["pending_email"] is None
    client.cookies.clear()
    r = await _redeem(client, token)
    assert r.status_code == 400 and r.json()["error"] == "invalid_token"
    assert (await _user_row(engine, guest["id"])).is_anonymous


async def test_a_new_address_ends_links_to_the_old_one(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await new_guest(client)
    first, second = fresh_email("first"), fresh_email("second")
    await request_conversion(client, first)
    old = await last_token(engine, first, "conversion_setup")
    r = await request_conversion(client, second)
    assert r.json()["pending_email"] == second
    new = await last_token(engine, second, "conversion_setup")
    client.cookies.clear()
    r = await _redeem(client, old)
    assert r.status_code == 400 and r.json()["error"] == "invalid_token"
    r = await _redeem(client, new)
    assert r.status_code == 200 and r.json()["user"]["email"] == second


async def test_asking_again_for_the_same_address_keeps_earlier_links_until_one_is_used(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await new_guest(client)
    email = fresh_email("again")
    await request_conversion(client, email)
    await request_conversion(client, email)
    tokens = [token_of(link_in(m)) for m in await outbox_emails(engine, email, "conversion_setup")]
    assert len(tokens) == 2 and tokens[0] != tokens[1]
    client.cookies.clear()
    assert (await _redeem(client, tokens[0])).status_code == 200
    r = await _redeem(client, tokens[1])  # redeeming one link ends every other
    assert r.status_code == 400 and r.json()["error"] == "invalid_token"


async def test_registered_caller_cannot_request_or_cancel_conversion(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await register(client, engine)
    r = await request_conversion(client, fresh_email())
    assert r.status_code == 409 and r.json()["error"] == "already_registered"
    r = await client.delete("/v1/me/conversion")
    assert r.status_code == 409 and r.json()["error"] == "already_registered"


async def test_conversion_refuses_invalid_addresses_and_needs_a_session(
    client: httpx.AsyncClient,
) -> None:
    await new_guest(client)
    for bad in [
        "",
        "no-at-sign",
        "a@b",
        "two@@example.org",
        "x@example.org\r\nBcc: y@z.org",
        5,
        None,
    ]:
        r = await client.post("/v1/me/conversion", json={"email": bad})
        assert r.status_code == 422 and r.json()["error"] == "invalid_email", bad
    assert (await client.get("/v1/me")).json()["state"] == "anonymous"
    client.cookies.clear()
    r = await request_conversion(client, fresh_email())
    assert r.status_code == 401 and r.json()["error"] == "invalid_session"


async def test_unknown_or_malformed_tokens_are_invalid_not_errors(
    client: httpx.AsyncClient,
) -> None:
    client.cookies.clear()
    for token in ["nope", "x" * 5000, "", "\u00e9\u0000"]:
        r = await _redeem(client, token)
        assert r.status_code == 400 and r.json()["error"] == "invalid_token", token
    r = await client.post("/v1/password-setup", json={"token": 1, "password": PASSWORD})
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"


async def test_weak_password_at_setup_leaves_the_link_usable(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await new_guest(client)
    email = fresh_email("weak")
    await request_conversion(client, email)
    token = await last_token(engine, email, "conversion_setup")
    client.cookies.clear()
    r = await _redeem(client, token, "short")
    assert r.status_code == 422 and r.json()["error"] == "weak_password"
    assert (await _redeem(client, token)).status_code == 200


async def test_whole_flow_by_mail_from_request_to_registered_account(server_url: str) -> None:
    """The link comes from a real SMTP delivery by the outbox worker, not from the database."""
    with MailServer() as mail:
        async with private_database(server_url) as url:
            settings = make_settings(url, smtp_url=mail.url)
            engine = create_engine(url, pool_size=2)
            try:
                async with (
                    running_app(settings) as application,
                    running_worker(engine, settings, smtp_url=settings.smtp_url),
                    bare_client(application) as device,
                ):
                    guest = await new_guest(device)
                    guest_cookie = device.cookies["anonid_session"]
                    await device.patch(
                        "/v1/me/data",
                        json={"wishlist": ["book"]},
                        headers={"Content-Type": "application/merge-patch+json"},
                    )
                    email = fresh_email("mailed")
                    assert (await request_conversion(device, email)).status_code == 202

                    msg = await mail.wait_for(lambda m: m["To"] == email, timeout=20)
                    assert msg["Message-ID"] and html_of(msg)
                    link = next(u for u in links_in(msg) if "/account/setup?token=" in u)
                    assert link.startswith("https://anonid.test/")
                    token = token_of(link)

                    async with bare_client(application) as other:
                        r = await _redeem(other, token)
                        assert r.status_code == 200, r.text
                        user = r.json()["user"]
                        assert user["id"] == guest["id"] and user["data"] == {"wishlist": ["book"]}
                        assert user["state"] == "registered" and user["email"] == email
                        again = await _redeem(other, token)
                        assert again.status_code == 400 and again.json()["error"] == "invalid_token"

                    device.cookies.clear()
                    stale = await device.get(
                        "/v1/me", headers={"Cookie": f"anonid_session={guest_cookie}"}
                    )
                    assert stale.status_code == 401
            finally:
                await engine.dispose()
