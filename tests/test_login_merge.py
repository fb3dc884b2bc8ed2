"""Merge on login (CONTRACT §6): a guest's data folds into the account it logs in to."""

from __future__ import annotations

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.account_support import (
    PASSWORD,
    bare_client,
    fresh_email,
    new_guest,
    register,
    request_conversion,
)
from tests.conftest import AppFactory


async def _exists(engine: AsyncEngine, user_id: str) -> bool:
    async with engine.connect() as conn:
        found = await conn.scalar(
            sa.text("SELECT count(*) FROM users WHERE id = :id"), {"id": user_id}
        )
    return found == 1


async def _login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/v1/login", json={"email": email, "password": password})


async def test_guest_data_merges_into_the_account_and_the_guest_is_deleted(
    app: FastAPI, engine: AsyncEngine
) -> None:
    account_data = {
        "prefs": {"theme": "dark", "langs": ["en", "fr"], "nested": {"keep": 1}},
        "cart": [1, 2],
        "name": "account",
    }
    guest_data = {
        "prefs": {"theme": "light", "langs": ["fr", "de"], "nested": {"add": 2}, "font": "serif"},
        "cart": [3, 1, {"sku": "x"}],
        "name": "guest",
        "only_guest": True,
    }
    async with bare_client(app) as c:
        account = await register(c, engine, data=account_data)
    async with bare_client(app) as device:
        guest = await new_guest(device)
        guest_cookie = device.cookies["anonid_session"]
        await device.put("/v1/me/data", json=guest_data)

        r = await _login(device, account["email"])
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["merged_from"] == guest["id"]
        assert body["user"]["id"] == account["id"]
        assert body["user"]["data"] == {
            "prefs": {
                "theme": "dark",  # scalars keep the account's value
                "langs": ["en", "fr", "de"],  # arrays unioned, account's items first
                "nested": {"keep": 1, "add": 2},  # objects merge recursively
                "font": "serif",
            },
            "cart": [1, 2, 3, {"sku": "x"}],
            "name": "account",
            "only_guest": True,
        }
        assert (await device.get("/v1/me")).json()["id"] == account["id"]
        stale = await device.get("/v1/me", headers={"Cookie": f"anonid_session={guest_cookie}"})
        assert stale.status_code == 401

    assert not await _exists(engine, guest["id"])
    async with engine.connect() as conn:
        payloads = list(
            await conn.scalars(
                sa.text("SELECT payload FROM events WHERE type = 'user.merged' AND user_id = :id"),
                {"id": account["id"]},
            )
        )
    assert payloads == [{"from": guest["id"], "into": account["id"]}]


async def test_login_without_a_guest_session_merges_nothing(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine, data={"a": 1})
    async with bare_client(app) as c:
        r = await _login(c, account["email"])
        assert r.status_code == 200 and "merged_from" not in r.json()
        assert r.json()["user"]["data"] == {"a": 1}


async def test_a_failed_login_leaves_the_guest_alone(app: FastAPI, engine: AsyncEngine) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
    async with bare_client(app) as device:
        guest = await new_guest(device)
        r = await _login(device, account["email"], "wrong password here")
        assert r.status_code == 401
        assert (await device.get("/v1/me")).json()["id"] == guest["id"]
    assert await _exists(engine, guest["id"])


async def test_logging_in_from_another_registered_session_merges_nothing(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        first = await register(c, engine, data={"mine": "first"})
    async with bare_client(app) as c:
        second = await register(c, engine, data={"mine": "second"})
        r = await _login(c, first["email"])
        assert r.status_code == 200 and "merged_from" not in r.json()
        assert r.json()["user"]["data"] == {"mine": "first"}
    assert await _exists(engine, second["id"])


async def test_a_pending_guest_merges_and_its_links_go_with_it(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
    async with bare_client(app) as device:
        guest = await new_guest(device)
        await request_conversion(device, fresh_email("pending"))
        r = await _login(device, account["email"])
        assert r.json()["merged_from"] == guest["id"]
    async with engine.connect() as conn:
        links = await conn.scalar(
            sa.text("SELECT count(*) FROM link_tokens WHERE user_id = :id"), {"id": guest["id"]}
        )
    assert links == 0


async def test_merge_on_login_can_be_turned_off(app_with: AppFactory, engine: AsyncEngine) -> None:
    _, c = await app_with(merge_on_login=False)
    account = await register(c, engine, data={"a": 1})
    guest = await new_guest(c)
    await c.put("/v1/me/data", json={"b": 2})
    r = await _login(c, account["email"])
    assert r.status_code == 200 and "merged_from" not in r.json()
    assert r.json()["user"]["data"] == {"a": 1}
    assert await _exists(engine, guest["id"])


async def test_login_from_a_foreign_origin_is_refused(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    account = await register(client, engine)
    client.cookies.clear()
    r = await client.post(
        "/v1/login",
        json={"email": account["email"], "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert r.status_code == 403 and r.json()["error"] == "csrf_rejected"


async def test_four_logins_cannot_grow_an_account_past_the_data_limit(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    """Security finding 1: each guest was within ``ANONID_DATA_MAX_BYTES``, but merging four of
    them grew one account to 240 kB, after which every PATCH on it was 413. A merge whose result
    would exceed the limit does not happen: the login succeeds and the guest is left alone."""
    limit = 1024
    application, _ = await app_with(data_max_bytes=limit)
    async with bare_client(application) as c:
        account = await register(c, engine, data={"a": "x" * 300})
    merged, refused = [], []
    for n in range(4):
        async with bare_client(application) as device:
            guest = await new_guest(device)
            guest_data = {f"g{n}": "y" * 300, "a": "guest's"}
            assert (await device.put("/v1/me/data", json=guest_data)).status_code == 200
            guest_cookie = device.cookies["anonid_session"]
            r = await _login(device, account["email"])
            assert r.status_code == 200, r.text
            assert r.json()["user"]["id"] == account["id"]
            size = await _stored_size(engine, account["id"])
            assert size <= limit
            if "merged_from" in r.json():
                merged.append(guest["id"])
                assert not await _exists(engine, guest["id"])
                continue
            refused.append(guest["id"])
            # Left alone: the row, its data and its session are as they were.
            again = await device.get("/v1/me", headers={"Cookie": f"anonid_session={guest_cookie}"})
            assert again.status_code == 200, again.text
            assert again.json()["id"] == guest["id"] and again.json()["data"] == guest_data
    assert len(merged) == 2 and len(refused) == 2  # 300 + 2 x 300 bytes fit, a third does not
    async with engine.connect() as conn:
        sources = set(
            await conn.scalars(
                sa.text(
                    "SELECT payload ->> 'from' FROM events "
                    "WHERE type = 'user.merged' AND user_id = :id"
                ),
                {"id": account["id"]},
            )
        )
    assert sources == set(merged)


async def _stored_size(engine: AsyncEngine, user_id: str) -> int:
    async with engine.connect() as conn:
        size = await conn.scalar(
            sa.text("SELECT octet_length(data::text) FROM users WHERE id = :id"), {"id": user_id}
        )
    assert size is not None
    return int(size)
