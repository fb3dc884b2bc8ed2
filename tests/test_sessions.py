"""Session lifecycle: sliding renewal, key rotation and JWKS, logout."""

from __future__ import annotations

import time

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.sessions import rotate_signing_key
from tests.tokens import claims_for, sign


async def _updated_at(engine: AsyncEngine, user_id: str):
    async with engine.connect() as conn:
        return await conn.scalar(
            sa.text("SELECT updated_at FROM users WHERE id = :id"), {"id": user_id}
        )


async def _backdate(engine: AsyncEngine, user_id: str, days: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE users SET updated_at = now() - make_interval(days => :d) WHERE id = :id"
            ),
            {"d": days, "id": user_id},
        )


async def test_anonymous_session_older_than_a_day_gets_a_fresh_cookie_and_touch(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    user_id = (await client.post("/v1/anonymous")).json()["user"]["id"]
    await _backdate(engine, user_id, 3)
    old = int(time.time()) - 2 * 86400
    client.cookies.set(
        "anonid_session",
        await sign(engine, claims_for(user_id, iat=old, exp=old + 30 * 86400)),
        domain="anonid.test",
    )
    before = await _updated_at(engine, user_id)
    r = await client.get("/v1/me")
    assert r.status_code == 200
    assert "anonid_session=" in r.headers.get("set-cookie", ""), "no renewed cookie"
    after = await _updated_at(engine, user_id)
    assert after > before

    # The renewed cookie is young: the next request neither renews nor touches again.
    r2 = await client.get("/v1/me")
    assert "set-cookie" not in r2.headers
    assert await _updated_at(engine, user_id) == after


async def test_touch_happens_at_most_once_a_day(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    user_id = (await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})).json()[
        "user"
    ]["id"]
    old = int(time.time()) - 2 * 86400
    token = await sign(engine, claims_for(user_id, iat=old, exp=old + 30 * 86400))
    auth = {"Authorization": f"Bearer {token}"}
    await _backdate(engine, user_id, 3)
    assert (await client.get("/v1/me", headers=auth)).status_code == 200
    first = await _updated_at(engine, user_id)
    assert (await client.get("/v1/me", headers=auth)).status_code == 200
    assert await _updated_at(engine, user_id) == first
    # A bearer client gets no cookie: it manages its own token.
    assert "set-cookie" not in (await client.get("/v1/me", headers=auth)).headers


async def test_young_session_is_not_renewed(client: httpx.AsyncClient) -> None:
    await client.post("/v1/anonymous")
    r = await client.get("/v1/me")
    assert r.status_code == 200 and "set-cookie" not in r.headers


async def test_rotated_key_signs_new_tokens_and_old_tokens_keep_working(
    app: FastAPI, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    old = (await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})).json()[
        "access_token"
    ]
    old_kid = (await client.get("/.well-known/jwks.json")).json()["keys"][0]["kid"]
    async with engine.begin() as conn:
        new_kid = await rotate_signing_key(conn)
    await app.state.services.keys.load()  # what the periodic refresh does within its lifetime

    kids = [k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]]
    assert new_kid in kids and old_kid in kids
    new = (await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})).json()[
        "access_token"
    ]
    import jwt

    assert jwt.get_unverified_header(new)["kid"] == new_kid
    for token in (old, new):
        r = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200


async def test_logout_clears_the_cookie(client: httpx.AsyncClient) -> None:
    await client.post("/v1/anonymous")
    r = await client.post("/v1/logout")
    assert r.status_code == 204
    assert "Max-Age=0" in r.headers["set-cookie"]
    assert (await client.get("/v1/me")).status_code == 401


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
