"""Credentials (CONTRACT §5): password policy, argon2id, login, change, logout-all, reset."""

from __future__ import annotations

import statistics
import time
from typing import Literal

import httpx
import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher, extract_parameters
from argon2.low_level import Type
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.credentials import password_hashing as passwords
from app.credentials.password_hashing import HASHER, check_policy, common_passwords
from tests.account_support import (
    PASSWORD,
    bare_client,
    bearer,
    fresh_email,
    last_token,
    link_in,
    new_guest,
    outbox_emails,
    register,
    request_conversion,
)
from tests.conftest import AppFactory


async def _hash_of(engine: AsyncEngine, user_id: str) -> str:
    async with engine.connect() as conn:
        value = await conn.scalar(
            sa.text("SELECT password_hash FROM users WHERE id = :id"), {"id": user_id}
        )
    assert isinstance(value, str)
    return value


async def _login(
    client: httpx.AsyncClient, email: str, password: str, **kw: object
) -> httpx.Response:
    return await client.post("/v1/login", json={"email": email, "password": password}, **kw)  # type: ignore[arg-type]


def test_shipped_common_password_list_has_at_least_ten_thousand_entries() -> None:
    common = common_passwords()
    assert len(common) >= 10_000
    assert {"123456", "password", "iloveyou", "qwertyuiop"} <= common


async def test_weak_passwords_are_refused_with_the_reason(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await new_guest(client)
    email = fresh_email("weak")
    await request_conversion(client, email)
    token = await last_token(engine, email, "conversion_setup")
    cases = {
        "short": "too short",
        "x" * 7: "too short",
        "Password1": "commonly used",  # common regardless of case
        "qwertyuiop": "commonly used",
        "y" * 129: "too long",
    }
    for password, reason in cases.items():
        r = await client.post("/v1/password-setup", json={"token": token, "password": password})
        assert r.status_code == 422, password
        assert r.json()["error"] == "weak_password" and reason in r.json()["message"], password
    # No composition rules: a long lower-case phrase is fine, and exactly 128 characters is fine.
    r = await client.post("/v1/password-setup", json={"token": token, "password": "z" * 128})
    assert r.status_code == 200


def test_policy_counts_characters_after_nfkc_normalisation() -> None:
    # U+FB03 (ffi ligature) is one code point that NFKC turns into three.
    assert check_policy("\ufb03" * 3, 8) == "ffi" * 3
    fullwidth = "\uff43\uff4f\uff52\uff52\uff45\uff43\uff54-horse-42"
    assert check_policy(fullwidth, 8) == "correct-horse-42"


async def test_nfkc_equivalent_password_logs_in(app: FastAPI, engine: AsyncEngine) -> None:
    fullwidth = "\uff23\uff4f\uff52\uff52\uff45\uff43\uff54 Horse 42"  # fullwidth "Correct"
    async with bare_client(app) as c:
        account = await register(c, engine, password=fullwidth)
    async with bare_client(app) as c:
        r = await _login(c, account["email"], "Correct Horse 42")
        assert r.status_code == 200, r.text


async def test_passwords_are_never_truncated(app: FastAPI, engine: AsyncEngine) -> None:
    long_password = "a fairly long passphrase " * 4 + "tail"  # 104 characters
    async with bare_client(app) as c:
        account = await register(c, engine, password=long_password)
    async with bare_client(app) as c:
        assert (await _login(c, account["email"], long_password[:72])).status_code == 401
        assert (await _login(c, account["email"], long_password[:-1])).status_code == 401
        assert (await _login(c, account["email"], long_password)).status_code == 200


async def test_minimum_length_follows_the_setting(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    _, c = await app_with(password_min_length=16)
    await new_guest(c)
    email = fresh_email("minlen")
    await request_conversion(c, email)
    token = await last_token(engine, email, "conversion_setup")
    r = await c.post("/v1/password-setup", json={"token": token, "password": "fifteen chars!!"})
    assert r.status_code == 422 and "at least 16" in r.json()["message"]
    r = await c.post("/v1/password-setup", json={"token": token, "password": "sixteen chars!!!"})
    assert r.status_code == 200


async def test_hashes_are_argon2id_with_at_least_the_owasp_parameters(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    account = await register(client, engine)
    stored = await _hash_of(engine, account["id"])
    p = extract_parameters(stored)
    assert p.type is Type.ID
    assert p.memory_cost >= 19 * 1024 and p.time_cost >= 2 and p.parallelism >= 1
    assert PASSWORD not in stored


async def test_login_rehashes_a_hash_made_with_weaker_parameters(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
    old = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE users SET password_hash = :h WHERE id = :id"),
            {"h": old, "id": account["id"]},
        )
    async with bare_client(app) as c:
        assert (await _login(c, account["email"], PASSWORD)).status_code == 200
    rehashed = await _hash_of(engine, account["id"])
    assert rehashed != old and not HASHER.check_needs_rehash(rehashed)
    async with bare_client(app) as c:
        assert (await _login(c, account["email"], PASSWORD)).status_code == 200
    assert await _hash_of(engine, account["id"]) == rehashed  # current parameters: left alone


async def test_login_answers_the_same_for_unknown_email_and_wrong_password(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
    async with bare_client(app) as c:
        wrong = await _login(c, account["email"], "not the password at all")
        unknown = await _login(c, fresh_email("nobody"), PASSWORD)
        anonymous_pending = await _login(c, "", PASSWORD)
        for r in (wrong, unknown, anonymous_pending):
            assert r.status_code == 401 and r.json() == wrong.json()
        assert wrong.json()["error"] == "invalid_credentials"
        assert "set-cookie" not in wrong.headers

        ok = await _login(c, account["email"].upper(), PASSWORD)  # addresses are case-insensitive
        assert ok.status_code == 200
        body = ok.json()
        assert body["user"]["id"] == account["id"] and "merged_from" not in body
        assert body["expires_in"] == 15 * 60 and "access_token" not in body
        assert "refresh_token" not in body
        cookies = ok.headers.get_list("set-cookie")
        assert [c.split("=", 1)[0] for c in cookies] == ["anonid_session", "anonid_refresh"]
        assert all(f"Max-Age={14 * 86400};" in c for c in cookies)

        r = await _login(c, account["email"], PASSWORD, headers={"X-Anonid-Token": "bearer"})
        assert r.json()["token_type"] == "Bearer" and "set-cookie" not in r.headers


async def test_login_timing_does_not_reveal_whether_an_email_has_an_account(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
    unknown = fresh_email("ghost")
    known_times: list[float] = []
    unknown_times: list[float] = []
    async with bare_client(app) as c:
        await _login(c, unknown, "warm up the dummy hash")
        for _ in range(9):  # interleaved, so load from other processes hits both sides alike
            for email, times in ((account["email"], known_times), (unknown, unknown_times)):
                start = time.perf_counter()
                r = await _login(c, email, "wrong password here")
                times.append(time.perf_counter() - start)
                assert r.status_code == 401
    known, ghost = statistics.median(known_times), statistics.median(unknown_times)
    assert 0.5 < ghost / known < 2.0, (known, ghost)


async def test_password_change_ends_every_other_session_and_sends_a_notice(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as a, bare_client(app) as b:
        account = await register(a, engine)
        assert (await _login(b, account["email"], PASSWORD)).status_code == 200
        old_cookie = a.cookies["anonid_session"]
        new_password = "an entirely new secret"

        r = await a.post(
            "/v1/me/password",
            json={"current_password": "wrong one", "new_password": new_password},
        )
        assert r.status_code == 401 and r.json()["error"] == "invalid_credentials"
        r = await a.post(
            "/v1/me/password", json={"current_password": PASSWORD, "new_password": "iloveyou"}
        )
        assert r.status_code == 422 and r.json()["error"] == "weak_password"
        assert (await b.get("/v1/me")).status_code == 200  # refusals changed nothing

        r = await a.post(
            "/v1/me/password", json={"current_password": PASSWORD, "new_password": new_password}
        )
        assert r.status_code == 200 and r.json()["user"]["id"] == account["id"]
        assert a.cookies["anonid_session"] != old_cookie
        assert (await a.get("/v1/me")).status_code == 200
        assert (await b.get("/v1/me")).status_code == 401
        stale = await b.get("/v1/me", headers={"Cookie": f"anonid_session={old_cookie}"})
        assert stale.status_code == 401

    async with bare_client(app) as c:
        assert (await _login(c, account["email"], PASSWORD)).status_code == 401
        assert (await _login(c, account["email"], new_password)).status_code == 200
    notices = await outbox_emails(engine, account["email"], "password_changed")
    assert len(notices) == 1 and "https://anonid.test/account/reset" in notices[0]["text"]


async def test_password_change_and_logout_all_need_a_registered_session(
    client: httpx.AsyncClient,
) -> None:
    await new_guest(client)
    r = await client.post(
        "/v1/me/password", json={"current_password": "x", "new_password": "long enough password"}
    )
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = await client.post("/v1/logout-all")
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    client.cookies.clear()
    assert (await client.post("/v1/logout-all")).status_code == 401


async def test_logout_all_ends_every_session_and_clears_the_cookie(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as a, bare_client(app) as b:
        account = await register(a, engine)
        r = await _login(b, account["email"], PASSWORD, headers={"X-Anonid-Token": "bearer"})
        token, refresh_token = r.json()["access_token"], r.json()["refresh_token"]
        r = await a.post("/v1/logout-all")
        assert r.status_code == 204
        cleared = r.headers.get_list("set-cookie")
        assert len(cleared) == 2 and all("Max-Age=0" in c for c in cleared)
        assert (await b.get("/v1/me", headers=bearer(token))).status_code == 401
        # The other session's refresh token stopped working too.
        renewed = await b.post("/v1/session/refresh", json={"refresh_token": refresh_token})
        assert renewed.status_code == 401 and renewed.json()["error"] == "invalid_session"
        assert (await a.get("/v1/me")).status_code == 401
        assert (await _login(b, account["email"], PASSWORD)).status_code == 200


async def test_password_reset_answers_the_same_and_mails_only_registered_accounts(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
        guest_email = fresh_email("pending-guest")
        await new_guest(c)
        await request_conversion(c, guest_email)
    async with bare_client(app) as c:
        answers = [
            await c.post("/v1/password-reset", json={"email": email})
            for email in (account["email"], fresh_email("unknown"), guest_email, "not an address")
        ]
    assert {r.status_code for r in answers} == {202}
    assert all(r.content == answers[0].content for r in answers)
    mails = await outbox_emails(engine, account["email"], "password_reset")
    assert len(mails) == 1
    assert link_in(mails[0]).startswith("https://anonid.test/account/reset?token=")
    assert await outbox_emails(engine, guest_email, "password_reset") == []


async def test_password_reset_sets_a_new_password_and_ends_other_sessions(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as a, bare_client(app) as b:
        account = await register(a, engine)
        await b.post("/v1/password-reset", json={"email": account["email"]})
        token = await last_token(engine, account["email"], "password_reset")

        r = await b.post("/v1/password-reset/confirm", json={"token": token, "password": "123456"})
        assert r.status_code == 422 and r.json()["error"] == "weak_password"
        r = await b.post(
            "/v1/password-reset/confirm", json={"token": token, "password": "brand new passphrase"}
        )
        assert r.status_code == 200 and r.json()["user"]["id"] == account["id"]
        assert (await b.get("/v1/me")).status_code == 200
        assert (await a.get("/v1/me")).status_code == 401  # the other session ended
        again = await b.post(
            "/v1/password-reset/confirm", json={"token": token, "password": "another passphrase"}
        )
        assert again.status_code == 400 and again.json()["error"] == "invalid_token"

    async with bare_client(app) as c:
        assert (await _login(c, account["email"], PASSWORD)).status_code == 401
        assert (await _login(c, account["email"], "brand new passphrase")).status_code == 200
    async with engine.connect() as conn:
        events = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM events WHERE user_id = :id AND type = 'user.password_reset'"
            ),
            {"id": account["id"]},
        )
    assert events == 1


async def test_a_link_serves_only_its_own_purpose(app: FastAPI, engine: AsyncEngine) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
        await c.post("/v1/password-reset", json={"email": account["email"]})
        reset_token = await last_token(engine, account["email"], "password_reset")
        await new_guest(c)
        email = fresh_email("purpose")
        await request_conversion(c, email)
        setup_token = await last_token(engine, email, "conversion_setup")
        c.cookies.clear()

        r = await c.post(
            "/v1/password-reset/confirm", json={"token": setup_token, "password": "some passphrase"}
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_token"
        r = await c.post(
            "/v1/password-setup", json={"token": reset_token, "password": "some passphrase"}
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_token"
        # Each still works where it belongs.
        assert (
            await c.post("/v1/password-setup", json={"token": setup_token, "password": PASSWORD})
        ).status_code == 200
        assert (
            await c.post(
                "/v1/password-reset/confirm", json={"token": reset_token, "password": PASSWORD}
            )
        ).status_code == 200


async def test_expired_reset_link_answers_410(app: FastAPI, engine: AsyncEngine) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
        await c.post("/v1/password-reset", json={"email": account["email"]})
        token = await last_token(engine, account["email"], "password_reset")
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "UPDATE link_tokens SET expires_at = now() - interval '1 minute'"
                    " WHERE user_id = :id AND purpose = 'reset'"
                ),
                {"id": account["id"]},
            )
        r = await c.post(
            "/v1/password-reset/confirm", json={"token": token, "password": "some passphrase"}
        )
        assert r.status_code == 410 and r.json()["error"] == "token_expired"


class _PoolWatchingHasher(PasswordHasher):
    """The service's hasher, noting how many pooled connections the app held each time argon2
    ran (in the worker thread, while the request awaited it)."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__(
            time_cost=HASHER.time_cost,
            memory_cost=HASHER.memory_cost,
            parallelism=HASHER.parallelism,
            hash_len=HASHER.hash_len,
            salt_len=HASHER.salt_len,
            type=HASHER.type,
        )
        self.services = app.state.services
        self.held: list[int] = []

    def _note(self) -> None:
        svc = self.services
        self.held.append(svc.engine.pool.checkedout())

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self._note()
        return super().hash(password, salt=salt)

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self._note()
        return super().verify(hash, password)


async def test_no_pooled_connection_waits_while_a_password_is_hashed(
    app: FastAPI, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The review's attack: 200 concurrent wrong current_password guesses each held a database
    # connection while argon2 ran, raising another user's answer from 12 ms to 1.7 s.
    spy = _PoolWatchingHasher(app)
    monkeypatch.setattr(passwords, "HASHER", spy)
    async with bare_client(app) as c:
        account = await register(c, engine)  # a setup link redeemed with a password
        steps = {
            "setup": len(spy.held),
            "login": (await _login(c, account["email"], PASSWORD)).status_code,
            "wrong login": (await _login(c, account["email"], "not it at all")).status_code,
            "unknown login": (await _login(c, fresh_email("nobody"), PASSWORD)).status_code,
            "change, wrong current": (
                await c.post(
                    "/v1/me/password",
                    json={"current_password": "not it at all", "new_password": "new secret 1"},
                )
            ).status_code,
            "change": (
                await c.post(
                    "/v1/me/password",
                    json={"current_password": PASSWORD, "new_password": "new secret 2"},
                )
            ).status_code,
        }
        await c.post("/v1/password-reset", json={"email": account["email"]})
        token = await last_token(engine, account["email"], "password_reset")
        r = await c.post(
            "/v1/password-reset/confirm", json={"token": token, "password": "a new reset secret 3"}
        )
        steps["reset"] = r.status_code
    assert steps == {
        "setup": steps["setup"],
        "login": 200,
        "wrong login": 401,
        "unknown login": 401,
        "change, wrong current": 401,
        "change": 200,
        "reset": 200,
    }
    assert steps["setup"] >= 1 and len(spy.held) >= 8
    assert set(spy.held) == {0}, spy.held


async def test_password_change_guesses_are_rate_limited_like_login(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    application, _ = await app_with(login_rate_limit="3/minute")
    async with bare_client(application, client=("198.51.100.7", 40000)) as c:
        await register(c, engine)
        guesses = [
            await c.post(
                "/v1/me/password",
                json={"current_password": f"guess number {i}", "new_password": "new secret 1"},
            )
            for i in range(4)
        ]
    assert [r.status_code for r in guesses] == [
        401,
        401,
        429,
        429,
    ]  # the conversion request counted too
    assert guesses[-1].json()["error"] == "rate_limited"
    assert int(guesses[-1].headers["Retry-After"]) >= 1


async def test_a_dead_reset_link_is_refused_before_any_hashing(
    app: FastAPI, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _PoolWatchingHasher(app)
    monkeypatch.setattr(passwords, "HASHER", spy)
    async with bare_client(app) as c:
        for path in ("/v1/password-reset/confirm", "/v1/password-setup"):
            r = await c.post(path, json={"token": "no such link", "password": "a fine password"})
            assert r.status_code == 400 and r.json()["error"] == "invalid_token"
    assert spy.held == []
