"""Changing the address (CONTRACT §5): ``POST /v1/me/email`` sends a code and link to the new
address (nothing to a taken one, with the same answer), ``POST /v1/me/email/verify`` changes it by
code in a session or by link anywhere; the old address is told, ``user.email_changed`` recorded,
and the session version stays."""

from __future__ import annotations

from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.account_support import (
    PASSWORD,
    bare_client,
    fresh_email,
    last_code,
    new_guest,
    outbox_emails,
    register,
    register_without_password,
    wrong,
)
from tests.test_privacy import _shape


async def _ask(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post("/v1/me/email", json={"email": email})


async def _row(engine: AsyncEngine, user_id: str) -> sa.Row:
    async with engine.connect() as conn:
        return (
            await conn.execute(sa.text("SELECT * FROM users WHERE id = :id"), {"id": user_id})
        ).one()


async def _change_links(engine: AsyncEngine, user_id: str) -> list[Any]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT email, code_hash FROM link_tokens"
                " WHERE user_id = :id AND purpose = 'email_change'"
            ),
            {"id": user_id},
        )
        return [tuple(r) for r in rows]


async def test_the_code_changes_the_address_keeps_the_sessions_and_tells_the_old_one(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c, bare_client(app) as other_device:
        account = await register(c, engine)
        r = await other_device.post(
            "/v1/login", json={"email": account["email"], "password": PASSWORD}
        )
        assert r.status_code == 200
        new = fresh_email("New")
        r = await _ask(c, new)
        assert r.status_code == 202, r.text
        assert (await c.get("/v1/me")).json()["email"] == account["email"]  # not yet
        _, code = await last_code(engine, new.lower(), "email_change")
        r = await c.post("/v1/me/email/verify", json={"code": wrong(code)})
        assert r.status_code == 400 and r.json()["error"] == "invalid_code"
        r = await c.post("/v1/me/email/verify", json={"code": code})
        assert r.status_code == 200, r.text
        user = r.json()
        assert user["id"] == account["id"] and user["email"] == new.lower()
        assert user["email_verified"] is True and user["methods"] == ["password", "email"]
        # No session version bump: both devices stay signed in.
        assert (await c.get("/v1/me")).json()["email"] == new.lower()
        assert (await other_device.get("/v1/me")).status_code == 200
    row = await _row(engine, account["id"])
    # A guest (1) registered by its setup link (2); the address change adds nothing.
    assert row.session_version == 2 and row.email == new.lower()
    [notice] = await outbox_emails(engine, account["email"], "email_changed")
    assert new.lower() in notice["text"] and new.lower() in notice["html"]
    async with engine.connect() as conn:
        events = list(
            await conn.scalars(
                sa.text(
                    "SELECT payload FROM events WHERE type = 'user.email_changed' AND user_id = :id"
                ),
                {"id": account["id"]},
            )
        )
    assert events == [{"id": account["id"]}]
    # The account signs in with the new address, not the old one.
    async with bare_client(app) as c:
        assert (
            await c.post("/v1/login", json={"email": new, "password": PASSWORD})
        ).status_code == 200
        old = await c.post("/v1/login", json={"email": account["email"], "password": PASSWORD})
        assert old.status_code == 401


async def test_the_link_changes_the_address_from_any_browser(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register_without_password(c, engine)
        new = fresh_email("bylink")
        assert (await _ask(c, new)).status_code == 202
    token, code = await last_code(engine, new, "email_change")
    async with bare_client(app) as elsewhere:
        r = await elsewhere.post("/v1/me/email/verify", json={"token": token})
        assert r.status_code == 200 and r.json()["email"] == new
        assert "set-cookie" not in r.headers  # the link changes the address, signs nobody in
        again = await elsewhere.post("/v1/me/email/verify", json={"token": token})
        assert again.status_code == 400 and again.json()["error"] == "invalid_code"
        # The code of the same email ended with its link; a code needs a session anyway.
        r = await elsewhere.post("/v1/me/email/verify", json={"code": code})
        assert r.status_code == 401
    # An account without a password signs in by email with its new address.
    async with bare_client(app) as c:
        await c.post("/v1/login/email", json={"email": new})
        _, login_code = await last_code(engine, new, "login_code")
        r = await c.post("/v1/login/email/verify", json={"email": new, "code": login_code})
        assert r.status_code == 200 and r.json()["user"]["id"] == account["id"]


async def test_email_change_to_a_taken_address_reveals_nothing_and_changes_nothing(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        owner = await register(c, engine)
    answers, exports = {}, {}
    for name, address in (("taken", owner["email"]), ("free", fresh_email("free"))):
        async with bare_client(app) as c:
            account = await register(c, engine)
            before = await _row(engine, account["id"])
            r = await _ask(c, address.upper() if name == "taken" else address)
            answers[name] = r
            exports[name] = _shape((await c.get("/v1/me/export")).json(), address)
            me = (await c.get("/v1/me")).json()
            assert me["email"] == account["email"]
            after = await _row(engine, account["id"])
            assert after.email == before.email and after.session_version == before.session_version
            if name == "taken":
                assert await _change_links(engine, account["id"]) == []
                r = await c.post("/v1/me/email/verify", json={"code": "123456"})
                assert r.status_code == 400 and r.json()["error"] == "invalid_code"
    taken, free = answers["taken"], answers["free"]
    assert taken.status_code == free.status_code == 202
    assert taken.content == free.content
    assert taken.headers.get("cache-control") == free.headers.get("cache-control")
    assert exports["taken"].keys() == exports["free"].keys()
    for key in exports["taken"].keys() - {"user", "sessions"}:  # theirs differ by their times
        assert exports["taken"][key] == exports["free"][key], key
    assert exports["taken"]["links"] == [] and exports["taken"]["emails"] == []
    # Nothing went to the taken address: no code, no link, no notice.
    assert await outbox_emails(engine, owner["email"], "email_change") == []
    assert await outbox_emails(engine, owner["email"], "email_changed") == []
    assert (await _row(engine, owner["id"])).email == owner["email"]


async def test_a_new_request_ends_the_earlier_one_whatever_the_address(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        owner = await register(c, engine)
        account = await register(c, engine)
        first = fresh_email("first")
        await _ask(c, first)
        token, _ = await last_code(engine, first, "email_change")
        await _ask(c, owner["email"])  # taken: it ends the request to ``first`` all the same
        r = await c.post("/v1/me/email/verify", json={"token": token})
        assert r.status_code == 400 and r.json()["error"] == "invalid_code"
    assert (await _row(engine, account["id"])).email == account["email"]


async def test_an_address_taken_after_the_request_is_409_and_changes_nothing(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
        wanted = fresh_email("contested")
        await _ask(c, wanted)
        _, code = await last_code(engine, wanted, "email_change")
        async with bare_client(app) as fast:
            await register(fast, engine, wanted)
        r = await c.post("/v1/me/email/verify", json={"code": code})
        assert r.status_code == 409 and r.json()["error"] == "email_taken"
    assert (await _row(engine, account["id"])).email == account["email"]
    assert await outbox_emails(engine, account["email"], "email_changed") == []


async def test_only_registered_accounts_change_their_address(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        await new_guest(c)
        r = await _ask(c, fresh_email())
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        r = await c.post("/v1/me/email/verify", json={"code": "123456"})
        assert r.status_code == 403
        c.cookies.clear()
        assert (await _ask(c, fresh_email())).status_code == 401
        account = await register(c, engine)
        for bad in ("", "not-an-address", "a@b", 7):
            r = await c.post("/v1/me/email", json={"email": bad})
            assert r.status_code == 422 and r.json()["error"] == "invalid_email", bad
        r = await c.post("/v1/me/email/verify", json={})
        assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    assert (await _row(engine, account["id"])).email == account["email"]
