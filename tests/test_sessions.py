"""Sessions (CONTRACT §4): short access tokens, rotating refresh tokens, reuse detection,
lifetimes, transparent renewal, a user's own sessions, key rotation and logout.

Time is simulated by moving the stored timestamps (``sessions``, ``users``) or, for an offline
verifier, by PyJWT's clock; nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.sessions.keys import rotate_signing_key
from app.sessions.useragent import summarise
from tests.account_support import (
    PASSWORD,
    bare_client,
    bearer,
    fresh_email,
    last_token,
    new_guest,
    outbox_emails,
    register,
    request_conversion,
)
from tests.tokens import claims_for, sid_of, sign

BEARER = {"X-Anonid-Token": "bearer"}
REFRESH = "/v1/session/refresh"


async def _bearer_guest(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.post("/v1/anonymous", headers=BEARER)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(REFRESH, json={"refresh_token": token})


async def _session(engine: AsyncEngine, sid: str) -> Any:
    async with engine.connect() as conn:
        return (
            await conn.execute(sa.text("SELECT * FROM sessions WHERE id = :id"), {"id": sid})
        ).one()


async def _move(engine: AsyncEngine, sid: str, column: str, ago: timedelta) -> None:
    """Set one timestamp of a session to ``ago`` before now (time passing for that session)."""
    assert column in ("created_at", "last_used_at", "rotated_at")
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                f"UPDATE sessions SET {column} = now() - CAST(:ago AS interval) WHERE id = :id"
            ),
            {"ago": ago, "id": sid},
        )
        # last_used_day is last_used_at's UTC day: what retention's index holds.
        await conn.execute(
            sa.text(
                "UPDATE sessions SET last_used_day = (last_used_at AT TIME ZONE 'UTC')::date "
                "WHERE id = :id"
            ),
            {"id": sid},
        )


async def _live_sessions(engine: AsyncEngine, user_id: str) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                sa.text("SELECT count(*) FROM sessions WHERE user_id = :u AND ended_at IS NULL"),
                {"u": user_id},
            )
        )


async def _expired_access(engine: AsyncEngine, token: str) -> str:
    """The same session's access token as it is once expired: signed with the real key, every
    claim as issued but ``exp`` (and ``iat``) in the past."""
    claims = jwt.decode(token, options={"verify_signature": False})
    now = int(time.time())
    return await sign(engine, {**claims, "iat": now - 1000, "exp": now - 100})


def _cookies(r: httpx.Response) -> dict[str, str]:
    """Set-Cookie values by name."""
    return {c.split("=", 1)[0]: c for c in r.headers.get_list("set-cookie")}


def _cleared(r: httpx.Response) -> bool:
    cookies = _cookies(r)
    return set(cookies) == {"anonid_session", "anonid_refresh"} and all(
        "Max-Age=0" in v for v in cookies.values()
    )


def _max_age(set_cookie: str) -> int:
    for part in set_cookie.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "max-age":
            return int(value)
    raise AssertionError(set_cookie)


async def _events(engine: AsyncEngine, user_id: str, kind: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT payload FROM events WHERE user_id = :u AND type = :t"),
            {"u": user_id, "t": kind},
        )
        return [r.payload for r in rows]


# Rotation


async def test_every_refresh_rotates_both_tokens_in_the_same_session(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    guest = await _bearer_guest(client)
    sid = sid_of(guest["access_token"])
    tokens = [guest["refresh_token"]]
    for _ in range(3):
        r = await _refresh(client, tokens[-1])
        assert r.status_code == 200, r.text
        body = r.json()
        assert "set-cookie" not in r.headers and r.headers["cache-control"] == "no-store"
        assert body["token_type"] == "Bearer" and body["expires_in"] == 15 * 60
        assert body["user"]["id"] == guest["user"]["id"]
        assert sid_of(body["access_token"]) == sid
        assert body["refresh_token"] not in tokens
        tokens.append(body["refresh_token"])
        me = await client.get("/v1/me", headers=bearer(body["access_token"]))
        assert me.status_code == 200
    # Stored only as SHA-256: no token appears in the row, the live one's hash does.
    row = await _session(engine, sid)
    assert not any(t.encode() in repr(row).encode() for t in tokens)
    assert bytes(row.live_hashes[0]) == hashlib.sha256(tokens[-1].encode()).digest()
    assert await _live_sessions(engine, guest["user"]["id"]) == 1


async def test_refresh_with_the_cookie_sets_both_cookies_for_a_backend_to_pass_on(
    client: httpx.AsyncClient,
) -> None:
    await new_guest(client)
    old_refresh = client.cookies["anonid_refresh"]
    old_access = client.cookies["anonid_session"]
    # A backend forwarding the refresh cookie: no Origin, no browser headers.
    r = await client.post(REFRESH)
    assert r.status_code == 200, r.text
    assert "access_token" not in r.json() and "refresh_token" not in r.json()
    cookies = _cookies(r)
    assert set(cookies) == {"anonid_session", "anonid_refresh"}
    assert all(_max_age(v) == 30 * 86400 and "HttpOnly" in v for v in cookies.values())
    assert client.cookies["anonid_refresh"] != old_refresh
    assert client.cookies["anonid_session"] != old_access
    assert (await client.get("/v1/me")).status_code == 200


@pytest.mark.parametrize("token", ["", "x", "a.b.c", "not-a-token" * 20, "AAAA.BBBB.CCCC"])
async def test_unknown_refresh_tokens_are_invalid_sessions(
    client: httpx.AsyncClient, token: str
) -> None:
    r = await _refresh(client, token)
    assert r.status_code == 401 and r.json()["error"] == "invalid_session"
    r = await client.post(REFRESH)
    assert r.status_code == 401 and r.json()["error"] == "invalid_session"


async def test_a_made_up_token_naming_a_real_session_ends_nothing(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Knowing a ``sid`` (every access token shows it) is not enough to end its session."""
    guest = await _bearer_guest(client)
    user_part, sid_part, _, secret = guest["refresh_token"].split(".")
    forged = f"{user_part}.{sid_part}.{'A' * 22}.{secret}"
    r = await _refresh(client, forged)
    assert r.status_code == 401
    assert (await _refresh(client, guest["refresh_token"])).status_code == 200
    assert await _events(engine, guest["user"]["id"], "user.refresh_reused") == []


# Reuse


async def test_a_spent_token_within_the_reuse_interval_gets_a_new_pair_in_the_same_session(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    guest = await _bearer_guest(client)
    first = guest["refresh_token"]
    a = (await _refresh(client, first)).json()
    # A second tab (or a retried request) presents the token just rotated.
    b = await _refresh(client, first)
    assert b.status_code == 200, b.text
    assert sid_of(b.json()["access_token"]) == sid_of(a["access_token"])
    # Whichever answer the client kept works afterwards.
    assert (await _refresh(client, a["refresh_token"])).status_code == 200
    assert await _live_sessions(engine, guest["user"]["id"]) == 1
    assert await _events(engine, guest["user"]["id"], "user.refresh_reused") == []


async def test_a_spent_token_after_the_interval_ends_the_session_with_an_event(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await new_guest(client)
    stolen = client.cookies["anonid_refresh"]
    user_id = (await client.get("/v1/me")).json()["id"]
    sid = sid_of(client.cookies["anonid_session"])
    assert (await client.post(REFRESH)).status_code == 200  # the owner rotates it
    await _move(engine, sid, "rotated_at", timedelta(seconds=11))

    async with bare_client(client._transport.app) as thief:  # type: ignore[attr-defined]
        thief.cookies.set("anonid_refresh", stolen, domain="anonid.test")
        r = await thief.post(REFRESH)
    assert r.status_code == 401 and r.json()["error"] == "invalid_session"
    assert _cleared(r)
    # The whole session ended: the owner's current tokens stop working too.
    assert (await client.post(REFRESH)).status_code == 401
    assert (await client.get("/v1/me")).status_code == 401
    assert (await _session(engine, sid)).ended_reason == "refresh_reused"
    assert await _events(engine, user_id, "user.refresh_reused") == [
        {"id": user_id, "session": sid}
    ]


async def test_a_token_spent_generations_ago_is_reuse_too(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    guest = await _bearer_guest(client)
    tokens = [guest["refresh_token"]]
    for _ in range(3):
        tokens.append((await _refresh(client, tokens[-1])).json()["refresh_token"])
    assert (await _refresh(client, tokens[0])).status_code == 401
    assert (await _refresh(client, tokens[-1])).status_code == 401
    assert len(await _events(engine, guest["user"]["id"], "user.refresh_reused")) == 1


async def test_reuse_on_a_registered_account_queues_a_security_alert(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
        r = await c.post("/v1/login", json={"email": account["email"], "password": PASSWORD})
        r = await c.post(
            "/v1/login", json={"email": account["email"], "password": PASSWORD}, headers=BEARER
        )
        first = r.json()["refresh_token"]
        second = (await _refresh(c, first)).json()["refresh_token"]
        await _move(engine, sid_of(r.json()["access_token"]), "rotated_at", timedelta(minutes=5))
        assert (await _refresh(c, first)).status_code == 401
        assert (await _refresh(c, second)).status_code == 401
    (alert,) = await outbox_emails(engine, account["email"], "security_alert")
    assert "/account/reset" in alert["text"] and "/account/reset" in alert["html"]
    assert len(await _events(engine, account["id"], "user.refresh_reused")) == 1


async def test_a_guest_whose_token_is_reused_gets_no_email(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    guest = await _bearer_guest(client)
    await _refresh(client, guest["refresh_token"])
    await _move(engine, sid_of(guest["access_token"]), "rotated_at", timedelta(seconds=30))
    assert (await _refresh(client, guest["refresh_token"])).status_code == 401
    async with engine.connect() as conn:
        mails = await conn.scalar(
            sa.text("SELECT count(*) FROM outbox WHERE user_id = :u"), {"u": guest["user"]["id"]}
        )
    assert mails == 0
    assert len(await _events(engine, guest["user"]["id"], "user.refresh_reused")) == 1


async def test_eight_concurrent_refreshes_of_one_token_leave_exactly_one_live_session(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        guest = await _bearer_guest(c)
    token = guest["refresh_token"]

    async def one() -> httpx.Response:
        async with bare_client(app) as other:
            return await _refresh(other, token)

    answers = await asyncio.gather(*(one() for _ in range(8)))
    ok = [r.json() for r in answers if r.status_code == 200]
    assert ok, [r.text for r in answers]
    assert all(r.status_code in (200, 401) for r in answers)
    assert {sid_of(b["access_token"]) for b in ok} == {sid_of(guest["access_token"])}
    assert await _live_sessions(engine, guest["user"]["id"]) == 1
    async with engine.connect() as conn:
        total = await conn.scalar(
            sa.text("SELECT count(*) FROM sessions WHERE user_id = :u"), {"u": guest["user"]["id"]}
        )
    assert total == 1
    # Whichever answer a client kept still refreshes.
    async with bare_client(app) as c:
        assert (await _refresh(c, ok[-1]["refresh_token"])).status_code == 200


# Conversion and offline verifiers


@contextmanager
def _clock(offset: float) -> Iterator[None]:
    """PyJWT's clock moved ``offset`` seconds ahead: an offline verifier some time later."""
    real = jwt.api_jwt.datetime

    class Later(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return real.now(tz) + timedelta(seconds=offset)

    jwt.api_jwt.datetime = Later  # type: ignore[misc]
    try:
        yield
    finally:
        jwt.api_jwt.datetime = real  # type: ignore[misc]


def _offline(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    kid = jwt.get_unverified_header(token)["kid"]
    (key,) = [k for k in jwks["keys"] if k["kid"] == kid]
    return jwt.decode(
        token,
        jwt.PyJWK(key).key,
        algorithms=["ES256"],
        audience="anonid",
        issuer="https://anonid.test",
    )


async def test_after_conversion_the_guests_old_tokens_stop_working(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """A guest cookie copied before the conversion (a shared computer): anonid refuses it at
    once, its refresh token is refused at once, and an offline verifier refuses the access
    token once it expires (ANONID_ACCESS_TOKEN_TTL_MINUTES)."""
    await new_guest(client)
    copied_access = client.cookies["anonid_session"]
    copied_refresh = client.cookies["anonid_refresh"]
    old_sid = sid_of(copied_access)
    email = fresh_email("convert")
    assert (await request_conversion(client, email)).status_code == 202
    token = await last_token(engine, email, "conversion_setup")
    done = await client.post("/v1/password-setup", json={"token": token, "password": PASSWORD})
    assert done.status_code == 200, done.text
    new_access = client.cookies["anonid_session"]
    assert sid_of(new_access) != old_sid  # the converting client got a fresh session
    assert (await client.get("/v1/me")).json()["state"] == "registered"

    async with bare_client(client._transport.app) as shared:  # type: ignore[attr-defined]
        shared.cookies.set("anonid_session", copied_access, domain="anonid.test")
        assert (await shared.get("/v1/me")).status_code == 401
        r = await _refresh(shared, copied_refresh)
        assert r.status_code == 401 and r.json()["error"] == "invalid_session"
    assert (await _session(engine, old_sid)).ended_at is not None

    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert _offline(copied_access, jwks)["anon"] is True  # the documented window
    with _clock(15 * 60 + 1), pytest.raises(jwt.ExpiredSignatureError):
        _offline(copied_access, jwks)
    with _clock(15 * 60 + 1), pytest.raises(jwt.ExpiredSignatureError):
        _offline(new_access, jwks)  # every access token expires; the new one is renewed
    assert _offline(new_access, jwks)["anon"] is False


async def test_every_session_version_bump_ends_the_other_sessions_and_renews_the_caller(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as a, bare_client(app) as b:
        account = await register(a, engine)
        login = {"email": account["email"], "password": PASSWORD}
        other = (await b.post("/v1/login", json=login, headers=BEARER)).json()
        before = sid_of(a.cookies["anonid_session"])
        r = await a.post(
            "/v1/me/password", json={"current_password": PASSWORD, "new_password": PASSWORD + "!"}
        )
        assert r.status_code == 200, r.text
        assert sid_of(a.cookies["anonid_session"]) != before
        assert (await a.get("/v1/me")).status_code == 200
        assert (await _refresh(b, other["refresh_token"])).status_code == 401
        assert (await b.get("/v1/me", headers=bearer(other["access_token"]))).status_code == 401
        assert (await _session(engine, before)).ended_at is not None
    assert await _live_sessions(engine, account["id"]) == 1


async def test_a_second_bearer_session_of_a_guest_ends_when_the_guest_converts(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await new_guest(client)
    access = client.cookies["anonid_session"]
    # The same guest on a second client: a session of its own.
    second = (await client.post("/v1/anonymous", headers={**BEARER, **bearer(access)})).json()
    assert second["user"]["id"] == (await client.get("/v1/me")).json()["id"]
    assert sid_of(second["access_token"]) != sid_of(access)
    email = fresh_email("second")
    await request_conversion(client, email)
    token = await last_token(engine, email, "conversion_setup")
    assert (
        await client.post("/v1/password-setup", json={"token": token, "password": PASSWORD})
    ).status_code == 200
    assert (await _refresh(client, second["refresh_token"])).status_code == 401
    assert await _live_sessions(engine, second["user"]["id"]) == 1


# Lifetimes


async def test_a_registered_session_ends_at_its_absolute_lifetime_whatever_its_activity(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
        body = (
            await c.post(
                "/v1/login",
                json={"email": account["email"], "password": PASSWORD},
                headers=BEARER,
            )
        ).json()
        sid = sid_of(body["access_token"])
        await _move(engine, sid, "created_at", timedelta(days=90) - timedelta(seconds=60))
        r = await _refresh(c, body["refresh_token"])
        assert r.status_code == 200, r.text
        fresh = r.json()
        # Neither the access token nor the cookies outlive the session.
        assert fresh["expires_in"] <= 60
        claims = jwt.decode(fresh["access_token"], options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] <= 60
        async with bare_client(app) as browser:
            browser.cookies.set("anonid_refresh", fresh["refresh_token"], domain="anonid.test")
            renewed = await browser.post(REFRESH)
            assert all(0 < _max_age(v) <= 60 for v in _cookies(renewed).values())
            last = browser.cookies["anonid_refresh"]
            access = browser.cookies["anonid_session"]
        await _move(engine, sid, "created_at", timedelta(days=90, seconds=1))
        assert (await c.get("/v1/me", headers=bearer(access))).status_code == 401
        r = await _refresh(c, last)
        assert r.status_code == 401 and r.json()["error"] == "invalid_session"


@pytest.mark.parametrize(("registered", "idle_days"), [(False, 30), (True, 14)])
async def test_a_session_ends_when_it_is_not_refreshed_for_its_idle_lifetime(
    app: FastAPI, engine: AsyncEngine, registered: bool, idle_days: int
) -> None:
    async with bare_client(app) as c:
        if registered:
            account = await register(c, engine)
            login = {"email": account["email"], "password": PASSWORD}
            body = (await c.post("/v1/login", json=login, headers=BEARER)).json()
        else:
            body = await _bearer_guest(c)
        sid = sid_of(body["access_token"])
        await _move(engine, sid, "last_used_at", timedelta(days=idle_days, seconds=-60))
        r = await _refresh(c, body["refresh_token"])
        assert r.status_code == 200, r.text
        await _move(engine, sid, "last_used_at", timedelta(days=idle_days, seconds=1))
        r2 = await _refresh(c, r.json()["refresh_token"])
        assert r2.status_code == 401 and r2.json()["error"] == "invalid_session"
        assert (await c.get("/v1/me", headers=bearer(r.json()["access_token"]))).status_code == 401


async def test_a_refresh_touches_the_account_at_most_once_a_day(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    guest = await _bearer_guest(client)
    user_id = guest["user"]["id"]

    async def updated_at() -> datetime:
        async with engine.connect() as conn:
            return await conn.scalar(
                sa.text("SELECT updated_at FROM users WHERE id = :id"), {"id": user_id}
            )

    async with engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE users SET updated_at = now() - interval '3 days' WHERE id = :id"),
            {"id": user_id},
        )
    stale = await updated_at()
    first = (await _refresh(client, guest["refresh_token"])).json()
    touched = await updated_at()
    assert touched > stale + timedelta(days=2)
    await _refresh(client, first["refresh_token"])
    assert await updated_at() == touched
    # Reading the profile with a fresh access token writes nothing.
    assert (await client.get("/v1/me", headers=bearer(first["access_token"]))).status_code == 200
    assert await updated_at() == touched


# Transparent renewal and expiry


async def test_an_expired_access_cookie_is_renewed_on_anonids_own_endpoints(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await new_guest(client)
    sid = sid_of(client.cookies["anonid_session"])
    requests = [
        ("GET", "/v1/me", None),
        ("PATCH", "/v1/me/data", {"seen": 1}),
        ("PUT", "/v1/me/data", {"seen": 2}),
        ("GET", "/v1/me/sessions", None),
        ("GET", "/v1/me/export", None),
        ("POST", "/v1/anonymous", None),
        ("GET", "/account/login", None),
    ]
    for method, path, body in requests:
        expired = await _expired_access(engine, client.cookies["anonid_session"])
        client.cookies.set("anonid_session", expired, domain="anonid.test")
        headers = {}
        if body is not None:
            media = "merge-patch+json" if method == "PATCH" else "json"
            headers["Content-Type"] = f"application/{media}"
        r = await client.request(
            method, path, headers=headers, content=None if body is None else json.dumps(body)
        )
        assert r.status_code == 200, (path, r.text)
        cookies = _cookies(r)
        assert set(cookies) >= {"anonid_session", "anonid_refresh"}, path
        assert client.cookies["anonid_session"] != expired
        assert sid_of(client.cookies["anonid_session"]) == sid
    assert (await client.get("/v1/me")).json()["data"] == {"seen": 2}


async def test_an_expired_access_token_without_a_refresh_is_session_expired(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    guest = await _bearer_guest(client)
    expired = await _expired_access(engine, guest["access_token"])
    r = await client.get("/v1/me", headers=bearer(expired))
    assert r.status_code == 401 and r.json()["error"] == "session_expired"
    assert "set-cookie" not in r.headers
    # A cookie alone: expired, nothing to renew it with, nothing cleared.
    client.cookies.set("anonid_session", expired, domain="anonid.test")
    r = await client.get("/v1/me")
    assert r.status_code == 401 and r.json()["error"] == "session_expired"
    assert "set-cookie" not in r.headers


async def test_an_expired_cookie_with_a_dead_refresh_cookie_clears_both(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await new_guest(client)
    expired = await _expired_access(engine, client.cookies["anonid_session"])
    assert (await client.post("/v1/logout")).status_code == 204
    client.cookies.set("anonid_session", expired, domain="anonid.test")
    client.cookies.set("anonid_refresh", "AAAA.BBBB.CCCC", domain="anonid.test")
    r = await client.get("/v1/me")
    assert r.status_code == 401 and r.json()["error"] == "invalid_session"
    assert _cleared(r)


async def test_a_browser_keeps_its_guest_for_weeks_with_no_javascript(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Visits a few days apart, each after the access cookie expired: every one answers and
    renews, and the guest is the same throughout."""
    user_id = (await new_guest(client))["id"]
    sid = sid_of(client.cookies["anonid_session"])
    for _ in range(5):
        await _move(engine, sid, "last_used_at", timedelta(days=6))
        expired = await _expired_access(engine, client.cookies["anonid_session"])
        client.cookies.set("anonid_session", expired, domain="anonid.test")
        r = await client.get("/v1/me")
        assert r.status_code == 200 and r.json()["id"] == user_id


# A user's own sessions


async def test_a_user_lists_and_ends_their_own_sessions(app: FastAPI, engine: AsyncEngine) -> None:
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    async with bare_client(app) as laptop, bare_client(app) as phone:
        laptop.headers["User-Agent"] = firefox
        account = await register(laptop, engine)
        login = {"email": account["email"], "password": PASSWORD}
        assert (await laptop.post("/v1/login", json=login)).status_code == 200
        phone.headers["User-Agent"] = "curl/8.5.0"
        other = (await phone.post("/v1/login", json=login, headers=BEARER)).json()

        listed = (await laptop.get("/v1/me/sessions")).json()["sessions"]
        mine = sid_of(laptop.cookies["anonid_session"])
        theirs = sid_of(other["access_token"])
        by_id = {s["id"]: s for s in listed}
        assert set(by_id) == {mine, theirs}  # live ones only: the ones replaced are gone
        assert by_id[mine]["current"] is True and by_id[theirs]["current"] is False
        assert by_id[mine]["user_agent"] == "Firefox on Linux"
        assert by_id[theirs]["user_agent"] == "curl"
        assert set(by_id[mine]) == {"id", "created_at", "last_used_at", "user_agent", "current"}

        r = await laptop.delete(f"/v1/me/sessions/{theirs}")
        assert r.status_code == 204 and "set-cookie" not in r.headers
        assert (await phone.get("/v1/me", headers=bearer(other["access_token"]))).status_code == 401
        assert (await _refresh(phone, other["refresh_token"])).status_code == 401
        for gone in (theirs, str(uuid.uuid4()), "not-an-id"):
            r = await laptop.delete(f"/v1/me/sessions/{gone}")
            assert r.status_code == 404 and r.json()["error"] == "not_found"
        # Another user's session is not found either.
        async with bare_client(app) as stranger:
            await new_guest(stranger)
            r = await stranger.delete(f"/v1/me/sessions/{mine}")
            assert r.status_code == 404

        r = await laptop.delete(f"/v1/me/sessions/{mine}")
        assert r.status_code == 204 and _cleared(r)
        assert (await laptop.get("/v1/me/sessions")).status_code == 401


async def test_logout_ends_the_session_so_its_refresh_token_stops_working(
    client: httpx.AsyncClient,
) -> None:
    await new_guest(client)
    refresh = client.cookies["anonid_refresh"]
    r = await client.post("/v1/logout")
    assert r.status_code == 204 and _cleared(r)
    assert (await client.get("/v1/me")).status_code == 401
    assert (await _refresh(client, refresh)).status_code == 401


async def test_logout_without_a_session_is_401(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/logout")
    assert r.status_code == 401 and r.json()["error"] == "invalid_session"


async def test_anonymous_with_an_invalid_cookie_starts_a_new_account(
    client: httpx.AsyncClient,
) -> None:
    client.cookies.set("anonid_session", "garbage", domain="anonid.test")
    r = await client.post("/v1/anonymous")
    assert r.status_code == 201
    assert (await client.get("/v1/me")).json()["id"] == r.json()["user"]["id"]


# The request guard on the refresh


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Referer": "https://evil.example/page"},
    ],
)
async def test_refresh_is_refused_cross_site_with_or_without_cookies(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    guest = await _bearer_guest(client)
    r = await client.post(REFRESH, json={"refresh_token": guest["refresh_token"]}, headers=headers)
    assert r.status_code == 403 and r.json()["error"] == "csrf_rejected"
    await new_guest(client)
    r = await client.post(REFRESH, headers=headers)
    assert r.status_code == 403 and r.json()["error"] == "csrf_rejected"
    # From the site itself it works.
    r = await client.post(REFRESH, headers={"Origin": "https://anonid.test"})
    assert r.status_code == 200


# Keys


async def test_rotated_key_signs_new_tokens_and_old_tokens_keep_working(
    app: FastAPI, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    old = (await client.post("/v1/anonymous", headers=BEARER)).json()["access_token"]
    old_kid = jwt.get_unverified_header(old)["kid"]
    async with engine.begin() as conn:
        new_kid = await rotate_signing_key(conn)
    await app.state.services.keys.load()  # what the periodic refresh does within its lifetime

    kids = [k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]]
    assert new_kid in kids and old_kid in kids
    new = (await client.post("/v1/anonymous", headers=BEARER)).json()["access_token"]
    assert jwt.get_unverified_header(new)["kid"] == new_kid
    for token in (old, new):
        r = await client.get("/v1/me", headers=bearer(token))
        assert r.status_code == 200


async def test_a_retired_key_stays_published_for_the_access_token_lifetime_only(
    app: FastAPI, engine: AsyncEngine
) -> None:
    keys = app.state.services.keys
    old_kid = keys.current.kid
    async with engine.begin() as conn:
        await rotate_signing_key(conn)
        await conn.execute(
            sa.text(
                "UPDATE signing_keys SET retired_at = now() - interval '21 minutes' WHERE kid = :k"
            ),
            {"k": old_kid},
        )
    await keys.load()
    assert old_kid not in {k["kid"] for k in keys.jwks()["keys"]}


async def test_a_token_signed_for_the_wrong_session_is_refused_by_anonid(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    guest = await _bearer_guest(client)
    forged = await sign(engine, claims_for(guest["user"]["id"], sid=str(uuid.uuid4())))
    r = await client.get("/v1/me", headers=bearer(forged))
    assert r.status_code == 401 and r.json()["error"] == "invalid_session"


@pytest.mark.parametrize(
    ("header", "summary"),
    [
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.87",
            "Edge on Windows",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
            "Safari on iOS",
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/126.0.0.0 Mobile Safari/537.36",
            "Chrome on Android",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like "
            "Gecko) Version/17.5 Safari/605.1.15",
            "Safari on macOS",
        ),
        ("python-httpx/0.27.0", "Python"),
        ("SomeBot/1.0 (+https://bot.example)", "SomeBot"),
        ("", None),
        (None, None),
    ],
)
def test_user_agents_are_summarised_as_browser_and_system(
    header: str | None, summary: str | None
) -> None:
    assert summarise(header) == summary


def test_settings_refuse_one_name_for_both_cookies() -> None:
    from app.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="ANONID_REFRESH_COOKIE_NAME"):
        load_settings(_env_file=None, cookie_name="same", refresh_cookie_name="same")


# The cull and retention (a database of their own: both act on whole tables)


async def _a_day_passes(engine: AsyncEngine, user_id: str, days: int = 1) -> None:
    """Every stored time of the user and its sessions moves ``days`` into the past."""
    shift = timedelta(days=days)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE users SET created_at = created_at - CAST(:d AS interval), "
                "updated_at = updated_at - CAST(:d AS interval) WHERE id = :id"
            ),
            {"d": shift, "id": user_id},
        )
        await conn.execute(
            sa.text(
                "UPDATE sessions SET created_at = created_at - CAST(:d AS interval), "
                "last_used_at = last_used_at - CAST(:d AS interval), "
                "last_used_day = ((last_used_at - CAST(:d AS interval)) AT TIME ZONE 'UTC')::date, "
                "rotated_at = rotated_at - CAST(:d AS interval) WHERE user_id = :id"
            ),
            {"d": shift, "id": user_id},
        )


async def test_a_guest_kept_by_refreshes_alone_is_not_culled_and_one_left_alone_is(
    server_url: str,
) -> None:
    from app.lifecycle.cull import run_cull
    from tests.conftest import client_for, make_settings, running_app
    from tests.outbox_support import private_engine

    async with private_engine(server_url) as (url, engine):
        settings = make_settings(url)
        async with running_app(settings) as application, client_for(application) as c:
            kept = await _bearer_guest(c)
            left = await _bearer_guest(c)
            refresh = kept["refresh_token"]
            for _ in range(30):
                await _a_day_passes(engine, kept["user"]["id"])
                r = await _refresh(c, refresh)  # nothing else: no GET, no PATCH
                assert r.status_code == 200, r.text
                refresh = r.json()["refresh_token"]
            await _a_day_passes(engine, left["user"]["id"], 41)

            result = await run_cull(engine, settings)
            assert result["deleted"] == 1
            assert (await _refresh(c, refresh)).status_code == 200
            async with engine.connect() as conn:
                rows = await conn.execute(
                    sa.text("SELECT user_id FROM sessions WHERE user_id IN (:a, :b)"),
                    {"a": kept["user"]["id"], "b": left["user"]["id"]},
                )
                owners = {str(r.user_id) for r in rows}
            # The culled guest's sessions went with it.
            assert owners == {kept["user"]["id"]}


async def test_retention_removes_ended_and_long_idle_sessions_only(server_url: str) -> None:
    from app.outbox.retention import remove_expired
    from tests.conftest import client_for, make_settings, running_app
    from tests.outbox_support import private_engine

    async with private_engine(server_url) as (url, engine):
        settings = make_settings(url)
        async with running_app(settings) as application, client_for(application) as c:
            sessions = {}
            for name in ("live", "ended_long_ago", "ended_just_now", "idle", "idle_recently"):
                sessions[name] = sid_of((await _bearer_guest(c))["access_token"])
            async with engine.begin() as conn:
                ended = (
                    "UPDATE sessions SET ended_at = now() - CAST(:ago AS interval) WHERE id = :id"
                )
                await conn.execute(
                    sa.text(ended), {"ago": timedelta(days=2), "id": sessions["ended_long_ago"]}
                )
                await conn.execute(
                    sa.text(ended), {"ago": timedelta(hours=1), "id": sessions["ended_just_now"]}
                )
            await _move(engine, sessions["idle"], "last_used_at", timedelta(days=32))
            await _move(engine, sessions["idle_recently"], "last_used_at", timedelta(days=29))

            removed = await remove_expired(engine, settings, batch_size=1)
            assert removed["sessions"] == 2
            async with engine.connect() as conn:
                left = {
                    str(r.id)
                    for r in await conn.execute(
                        sa.text("SELECT id FROM sessions WHERE id = ANY(:ids)"),
                        {"ids": [uuid.UUID(s) for s in sessions.values()]},
                    )
                }
            assert left == {
                sessions["live"],
                sessions["ended_just_now"],
                sessions["idle_recently"],
            }


# Upgrading from version 1


async def test_a_version_1_cookie_is_exchanged_once_for_a_session_of_the_same_guest(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Version 1 set one long-lived JWT with no ``sid``: a browser still holding one after the
    upgrade keeps its guest, getting a session pair in the answer."""
    guest = await _bearer_guest(client)
    user_id = guest["user"]["id"]
    v1 = claims_for(user_id, exp=int(time.time()) + 20 * 86400)
    del v1["sid"]
    old_cookie = await sign(engine, v1)
    client.cookies.set("anonid_session", old_cookie, domain="anonid.test")
    r = await client.get("/v1/me")
    assert r.status_code == 200 and r.json()["id"] == user_id
    assert set(_cookies(r)) == {"anonid_session", "anonid_refresh"}
    assert await _live_sessions(engine, user_id) == 2  # the bearer one, and the browser's
    assert (await client.post(REFRESH)).status_code == 200
    # Never as a bearer token, never once its session version moved on or it expired.
    r = await client.get("/v1/me", headers=bearer(old_cookie))
    assert r.status_code == 401 and r.json()["error"] == "invalid_session"
    for changed in ({"sv": 2}, {"exp": int(time.time()) - 10}):
        async with bare_client(client._transport.app) as other:  # type: ignore[attr-defined]
            other.cookies.set(
                "anonid_session", await sign(engine, {**v1, **changed}), domain="anonid.test"
            )
            r = await other.get("/v1/me")
            assert r.status_code == 401 and r.json()["error"] == "invalid_session"
            assert _cleared(r)


async def test_a_refresh_within_the_day_changes_no_indexed_column(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Rotation rewrites the session row at every refresh: within a day it changes no indexed
    column, so PostgreSQL can update it in place (HOT), writing no index entry."""
    guest = await _bearer_guest(client)
    token = guest["refresh_token"]
    before = (await _session(engine, sid_of(guest["access_token"]))).last_used_day
    for _ in range(5):
        token = (await _refresh(client, token)).json()["refresh_token"]
    row = await _session(engine, sid_of(guest["access_token"]))
    assert row.last_used_day == before
    async with engine.connect() as conn:
        options = await conn.scalar(
            sa.text("SELECT reloptions FROM pg_class WHERE relname = 'sessions'")
        )
    assert "fillfactor=70" in options
