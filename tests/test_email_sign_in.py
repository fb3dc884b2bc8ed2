"""Sign-in by email (CONTRACT §5, §6): ``POST /v1/login/email`` answers alike for every address
and mails only accounts; ``POST /v1/login/email/verify`` signs in with the code or the link,
merging a guest like a password login. Accounts without a password set one without a current
password, and a password login to them fails like a wrong password."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.account_support import (
    PASSWORD,
    ask_login_code,
    bare_client,
    expire_links,
    fresh_email,
    last_code,
    new_guest,
    outbox_emails,
    register,
    register_without_password,
    wrong,
)
from tests.conftest import AppFactory


async def _ask(client: httpx.AsyncClient, email: str, **kwargs: Any) -> httpx.Response:
    return await client.post("/v1/login/email", json={"email": email}, **kwargs)


async def _verify(client: httpx.AsyncClient, **body: str) -> httpx.Response:
    return await client.post("/v1/login/email/verify", json=body)


async def _login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/v1/login", json={"email": email, "password": password})


async def test_a_code_by_email_signs_in_any_account_with_an_address(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
    async with bare_client(app) as c:
        r = await _ask(c, account["email"].upper())
        assert r.status_code == 202
        [sent] = await outbox_emails(engine, account["email"], "login_code")
        assert sent["to"] == account["email"]
        _, code = await last_code(engine, account["email"], "login_code")
        r = await _verify(c, email=account["email"], code=code)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user"]["id"] == account["id"] and "merged_from" not in body
        assert body["user"]["methods"] == ["password", "email"]
        assert (await c.get("/v1/me")).json()["id"] == account["id"]
        again = await _verify(c, email=account["email"], code=code)
        assert again.status_code == 400 and again.json()["error"] == "invalid_code"


async def test_login_by_email_for_an_unknown_address_sends_nothing_and_answers_alike(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
    ghost = fresh_email("ghost")
    async with bare_client(app) as c:
        known = await _ask(c, account["email"])
        unknown = await _ask(c, ghost)
    assert known.status_code == unknown.status_code == 202
    assert known.content == unknown.content
    assert known.json() == {
        "status": "accepted",
        "message": "If an account has this address, a code and a link to sign in are on their way.",
    }
    for name in ("content-type", "cache-control", "set-cookie"):
        assert known.headers.get(name) == unknown.headers.get(name), name
    assert len(await outbox_emails(engine, account["email"], "login_code")) == 1
    assert await outbox_emails(engine, ghost) == []
    async with engine.connect() as conn:
        found = await conn.scalar(
            sa.text("SELECT count(*) FROM outbox WHERE payload::text LIKE :ghost"),
            {"ghost": f"%{ghost}%"},
        )
    assert found == 0
    # A code for the unknown address is as wrong as a wrong one for a real account.
    async with bare_client(app) as c:
        r_ghost = await _verify(c, email=ghost, code="123456")
        r_wrong = await _verify(c, email=account["email"], code="000000")
    assert r_ghost.status_code == r_wrong.status_code == 400
    assert r_ghost.json() == r_wrong.json()


async def test_login_by_email_takes_as_long_for_an_unknown_address(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
    ghost = fresh_email("slowghost")
    known_times: list[float] = []
    unknown_times: list[float] = []
    async with bare_client(app) as c:
        await _ask(c, ghost)
        await _ask(c, account["email"])
        for _ in range(15):  # interleaved, so load from other processes hits both sides alike
            for email, times in ((account["email"], known_times), (ghost, unknown_times)):
                start = time.perf_counter()
                assert (await _ask(c, email)).status_code == 202
                times.append(time.perf_counter() - start)
    known, unknown = statistics.median(known_times), statistics.median(unknown_times)
    assert 0.5 < unknown / known < 2.0, (known, unknown)


async def test_the_link_of_the_sign_in_email_signs_in_too(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register_without_password(c, engine)
    async with bare_client(app) as c:
        await _ask(c, account["email"])
        token, code = await last_code(engine, account["email"], "login_code")
        [sent] = await outbox_emails(engine, account["email"], "login_code")
        assert f"https://anonid.test/account/email?token={token}" in sent["text"]
        r = await _verify(c, token=token)
        assert r.status_code == 200 and r.json()["user"]["id"] == account["id"]
        # One email, one use: its code ended with its link.
        r = await _verify(c, email=account["email"], code=code)
        assert r.status_code == 400 and r.json()["error"] == "invalid_code"
        r = await _verify(c, token=token)
        assert r.status_code == 400 and r.json()["error"] == "invalid_code"
        for body in ({"token": "nope"}, {"email": account["email"]}, {"code": code}, {}):
            r = await c.post("/v1/login/email/verify", json=body)
            assert r.status_code in (400, 422), body


async def test_signing_in_by_email_merges_the_guest_like_a_password_login(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine, data={"favourites": {"teapot": True}})
    async with bare_client(app) as browser:
        guest = await new_guest(browser)
        await browser.patch(
            "/v1/me/data",
            json={"favourites": {"socks": True}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        await _ask(browser, account["email"])
        _, code = await last_code(engine, account["email"], "login_code")
        r = await _verify(browser, email=account["email"], code=code)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["merged_from"] == guest["id"] and body["user"]["id"] == account["id"]
        assert body["user"]["data"] == {"favourites": {"teapot": True, "socks": True}}
    async with engine.connect() as conn:
        gone = await conn.scalar(sa.text("SELECT count(*) FROM users WHERE id = :id"), guest)
        merged = await conn.scalar(
            sa.text("SELECT count(*) FROM events WHERE type = 'user.merged' AND user_id = :id"),
            {"id": account["id"]},
        )
    assert gone == 0 and merged == 1


async def test_eight_concurrent_sign_ins_with_one_code_succeed_exactly_once(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register_without_password(c, engine)
        await _ask(c, account["email"])
    _, code = await last_code(engine, account["email"], "login_code")

    async def verify() -> httpx.Response:
        async with bare_client(app) as c:
            return await _verify(c, email=account["email"], code=code)

    results = await asyncio.gather(*(verify() for _ in range(8)))
    assert sorted(r.status_code for r in results) == [200] + [400] * 7
    async with engine.connect() as conn:
        sessions = await conn.scalar(
            sa.text("SELECT count(*) FROM sessions WHERE user_id = :id AND ended_at IS NULL"),
            {"id": account["id"]},
        )
    assert sessions == 2  # the registering browser's, and the one winner's


async def test_sign_in_codes_die_after_five_wrong_tries_and_expire(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
        email = account["email"]
        await _ask(c, email)
        _, code = await last_code(engine, email, "login_code")
        for _ in range(5):
            assert (await _verify(c, email=email, code=wrong(code))).status_code == 400
        r = await _verify(c, email=email, code=code)
        assert r.status_code == 400 and r.json()["error"] == "invalid_code"

        token, code = await ask_login_code(c, engine, email)
        await expire_links(engine, account["id"], "login")
        r = await _verify(c, email=email, code=code)
        assert r.status_code == 410 and r.json()["error"] == "code_expired"
        r = await _verify(c, token=token)
        assert r.status_code == 410 and r.json()["error"] == "code_expired"


async def test_code_checks_are_rate_limited_per_address_and_per_ip(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    app, _ = await app_with(login_rate_limit="5/minute")
    async with bare_client(app, client=("198.51.100.7", 4000)) as c:
        account = await register(c, engine)  # counts once for its address
    email = account["email"]
    async with bare_client(app) as a:
        assert (await _ask(a, email)).status_code == 202
        statuses = [(await _verify(a, email=email, code="000000")).status_code for _ in range(4)]
    assert statuses == [400, 400, 400, 429]
    # Another client IP, the same address: still limited per address.
    async with bare_client(app, client=("203.0.113.9", 4000)) as b:
        r = await _verify(b, email=email, code="000000")
        assert r.status_code == 429 and "retry-after" in r.headers
        # That IP may still ask about other addresses.
        assert (await _ask(b, fresh_email())).status_code == 202


async def test_an_account_without_a_password_sets_one_without_a_current_password(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register_without_password(c, engine)
        r = await c.post("/v1/me/password", json={"new_password": PASSWORD})
        assert r.status_code == 200, r.text
        assert r.json()["user"]["methods"] == ["password", "email"]
        # Now it has one: the next change needs it.
        r = await c.post("/v1/me/password", json={"new_password": PASSWORD + " again"})
        assert r.status_code == 401 and r.json()["error"] == "invalid_credentials"
        r = await c.post(
            "/v1/me/password",
            json={"current_password": PASSWORD, "new_password": PASSWORD + " again"},
        )
        assert r.status_code == 200
    async with bare_client(app) as c:
        assert (await _login(c, account["email"], PASSWORD + " again")).status_code == 200
    notices = await outbox_emails(engine, account["email"], "password_changed")
    assert len(notices) == 2


async def test_password_login_to_an_account_without_one_fails_like_a_wrong_password(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        passwordless = await register_without_password(c, engine)
        with_password = await register(c, engine)
    async with bare_client(app) as c:
        none = await _login(c, passwordless["email"], PASSWORD)
        bad = await _login(c, with_password["email"], "not the password at all")
        unknown = await _login(c, fresh_email(), PASSWORD)
    assert none.status_code == bad.status_code == unknown.status_code == 401
    assert none.json() == bad.json() == unknown.json()


async def test_a_code_expires_after_the_configured_minutes(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    app, _ = await app_with(email_code_ttl_minutes=0.02)  # 1.2 seconds
    async with bare_client(app) as c:
        account = await register(c, engine)
        token, code = await ask_login_code(c, engine, account["email"])
        [sent] = await outbox_emails(engine, account["email"], "login_code")
        assert "expire in 1 minute." in sent["text"]  # as an email says it: whole minutes
        await asyncio.sleep(1.5)
        r = await _verify(c, email=account["email"], code=code)
        assert r.status_code == 410 and r.json()["error"] == "code_expired"
        r = await _verify(c, token=token)
        assert r.status_code == 410 and r.json()["error"] == "code_expired"
