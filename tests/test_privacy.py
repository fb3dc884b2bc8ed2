"""Export and erase (``GET /v1/me/export``, ``DELETE /v1/me``), for anonymous and registered users."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.account_support import bare_client, fresh_email, register
from tests.account_support import new_guest as new_guest_of
from tests.conftest import AppFactory
from tests.lifecycle_support import add_email, add_link, insert_registered, new_guest
from tests.tokens import claims_for, live_session, sign

WEBHOOK_SETTINGS = {
    "webhook_urls": "https://hooks.example.test/anonid",
    "webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _rows_referencing(engine: AsyncEngine, user_id: str) -> dict[str, int]:
    """Rows in every table that can name a user, by column or anywhere in a JSON payload."""
    uid = uuid.UUID(user_id)
    queries = {
        "users": "SELECT count(*) FROM users WHERE id = :u",
        "link_tokens": "SELECT count(*) FROM link_tokens WHERE user_id = :u",
        "sessions": "SELECT count(*) FROM sessions WHERE user_id = :u",
        "outbox.user_id": "SELECT count(*) FROM outbox WHERE user_id = :u",
        "events.user_id": "SELECT count(*) FROM events WHERE user_id = :u",
        "events.payload": "SELECT count(*) FROM events WHERE payload::text LIKE '%' || :s || '%'",
    }
    async with engine.connect() as conn:
        return {
            name: int(await conn.scalar(sa.text(q), {"u": uid, "s": user_id}))
            for name, q in queries.items()
        }


async def test_export_contains_the_data_and_events_and_no_secrets(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    user, token = await new_guest(client)
    r = await client.patch(
        "/v1/me/data", json={"favourites": ["tea"], "theme": "dark"}, headers=bearer(token)
    )
    assert r.status_code == 200
    link_token = await add_link(engine, user, purpose="reset")
    await add_email(engine, user, link_token, kind="password_reset")
    # A conversion's setup link and email are never listed (see the test below).
    setup_token = await add_link(engine, user)
    await add_email(engine, user, setup_token)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE users SET pending_email = 'later@example.test', "
                "pending_until = now() + interval '1 day' WHERE id = :u"
            ),
            {"u": uuid.UUID(user)},
        )

    r = await client.get("/v1/me/export", headers=bearer(token))

    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    export = r.json()
    assert export["user"]["id"] == user and export["user"]["state"] == "pending"
    assert export["pending_conversion"]["email"] == "later@example.test"
    assert export["user"]["data"] == {"favourites": ["tea"], "theme": "dark"}
    assert export["user"]["has_password"] is False
    assert [e["type"] for e in export["events"]] == ["user.anonymous_created"]
    assert [link["purpose"] for link in export["links"]] == ["reset"]
    assert [mail["email_kind"] for mail in export["emails"]] == ["password_reset"]
    assert export["emails"][0]["subject"]
    # Nothing that could be replayed: no token, no hash of one, no email body.
    text = r.text
    for secret in (link_token, setup_token):
        assert secret not in text
        assert hashlib.sha256(secret.encode()).hexdigest() not in text
    assert "token_hash" not in text and "password_hash" not in text
    assert "account/setup?token" not in text and "account/reset?token" not in text
    assert token not in text
    # Its session is listed, without any hash of a refresh token.
    (session,) = export["sessions"]
    assert set(session) == {
        "id",
        "created_at",
        "last_used_at",
        "user_agent",
        "ended_at",
        "ended_reason",
    }
    assert "hashes" not in text and "family" not in text


# Values that differ between any two exports whatever the addresses: ids, times, usernames.
_VOLATILE = {"id", "username", "created_at", "updated_at", "expires_at", "exported_at"}
_VOLATILE |= {"pending_until", "sent_at", "last_used_at"}


def _shape(value: Any, address: str) -> Any:
    """The export with volatile values and the requested address blanked out."""
    if isinstance(value, dict):
        return {k: "*" if k in _VOLATILE else _shape(v, address) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v, address) for v in value]
    return "<address>" if value == address else value


async def test_export_after_a_conversion_reads_the_same_whether_or_not_the_address_is_taken(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as owner_client:
        owner = await register(owner_client, engine)
    exports, mes = {}, {}
    for name, address in [("taken", owner["email"]), ("free", fresh_email("free"))]:
        async with bare_client(app) as c:
            await new_guest_of(c)
            r = await c.post("/v1/me/conversion", json={"email": address})
            assert r.status_code == 202, r.text
            r = await c.get("/v1/me/export")
            assert r.status_code == 200, r.text
            exports[name] = _shape(r.json(), address)
            mes[name] = _shape((await c.get("/v1/me")).json(), address)
    assert mes["taken"] == mes["free"]  # the same class of read: GET /v1/me
    taken, free = exports["taken"], exports["free"]
    assert taken.keys() == free.keys()
    for key in taken:
        assert taken[key] == free[key], key
    assert taken["links"] == [] and taken["emails"] == []
    assert taken["pending_conversion"] == {"email": "<address>", "expires_at": "*"}
    assert taken["user"]["pending_email"] == "<address>"


async def test_export_of_a_registered_user_has_no_password_hash(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    user, email = await insert_registered(engine)
    sid = await live_session(engine, user)
    token = await sign(engine, claims_for(user, anon=False, sid=sid))
    r = await client.get("/v1/me/export", headers=bearer(token))
    assert r.status_code == 200, r.text
    export = r.json()
    assert export["user"]["email"] == email and export["user"]["has_password"] is True
    assert "$argon2id" not in r.text and "password_hash" not in r.text


async def test_export_and_erase_need_a_valid_session(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    user, _ = await new_guest(client)
    stale = await sign(engine, claims_for(user, sv=7))
    for method, path in (("GET", "/v1/me/export"), ("DELETE", "/v1/me")):
        assert (await client.request(method, path)).status_code == 401
        r = await client.request(method, path, headers=bearer(stale))
        assert r.status_code == 401 and r.json()["error"] == "invalid_session"
    assert (await _rows_referencing(engine, user))["users"] == 1


async def test_erase_leaves_no_row_behind_that_references_the_user(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    _, client = await app_with(**WEBHOOK_SETTINGS)
    r = await client.post("/v1/anonymous")
    user = r.json()["user"]["id"]
    await add_link(engine, user)
    await add_email(engine, user, "some-link-token")
    async with engine.begin() as conn:
        # A merge that names the user (as another engineer's login would record it).
        await conn.execute(
            sa.text(
                "INSERT INTO events (id, type, user_id, payload) VALUES "
                "(:id, 'user.merged', NULL, jsonb_build_object('from', CAST(:g AS text), 'into', CAST(:u AS text)))"
            ),
            {"id": uuid.uuid4(), "g": str(uuid.uuid4()), "u": user},
        )
        deleted_before = await conn.scalar(
            sa.text("SELECT count(*) FROM events WHERE type = 'user.deleted'")
        )
    assert (await _rows_referencing(engine, user))["events.user_id"] >= 1

    r = await client.delete("/v1/me")  # the session cookie from POST /v1/anonymous

    assert r.status_code == 204
    cleared = r.headers.get_list("set-cookie")
    assert [c.split("=", 1)[0] for c in cleared] == ["anonid_session", "anonid_refresh"]
    assert all("max-age=0" in c.lower() for c in cleared)
    assert await _rows_referencing(engine, user) == dict.fromkeys(
        ["users", "link_tokens", "sessions", "outbox.user_id", "events.user_id", "events.payload"],
        0,
    )
    async with engine.connect() as conn:
        deleted_after = await conn.scalar(
            sa.text("SELECT count(*) FROM events WHERE type = 'user.deleted'")
        )
        # Integrating apps still learn which account went, through the webhook delivery.
        hook = await conn.scalar(
            sa.text(
                "SELECT payload FROM outbox WHERE kind = 'webhook' "
                "AND payload -> 'body' ->> 'type' = 'user.deleted' "
                "AND payload -> 'body' -> 'data' ->> 'id' = :u"
            ),
            {"u": user},
        )
    assert deleted_after == deleted_before + 1
    assert hook is not None and hook["url"] == WEBHOOK_SETTINGS["webhook_urls"]
    client.cookies.clear()
    assert (await client.get("/v1/me")).status_code == 401


async def test_erase_keeps_past_stats_but_not_the_person(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    _, client = await app_with()
    user, token = await new_guest(client)
    count = sa.text("SELECT count(*) FROM events WHERE type = 'user.anonymous_created'")
    async with engine.connect() as conn:
        before = await conn.scalar(count)
    assert (await client.delete("/v1/me", headers=bearer(token))).status_code == 204
    async with engine.connect() as conn:
        after = await conn.scalar(count)
    assert after == before
    assert sum((await _rows_referencing(engine, user)).values()) == 0
    assert (await client.get("/v1/me/export", headers=bearer(token))).status_code == 401


async def test_erase_with_a_cookie_from_a_foreign_origin_is_refused(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    r = await client.post("/v1/anonymous")
    user = r.json()["user"]["id"]
    r = await client.delete("/v1/me", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["error"] == "csrf_rejected"
    assert (await _rows_referencing(engine, user))["users"] == 1
    client.cookies.clear()
