"""A database outage under a running app: 503 with Retry-After while down, recovery by itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from app.platform.db import upgrade_to_head
from tests.conftest import client_for, make_settings, running_app
from tests.pgcontrol import PrivatePostgres


@pytest.fixture
async def private_pg(tmp_path: Path):
    pg = await asyncio.to_thread(PrivatePostgres, tmp_path / "outage")
    await asyncio.to_thread(upgrade_to_head, pg.url)
    yield pg
    await asyncio.to_thread(pg.close)


async def _until(predicate, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


async def test_database_down_gives_503_and_service_recovers_without_restart(
    private_pg: PrivatePostgres,
) -> None:
    async with running_app(make_settings(private_pg.url)) as app, client_for(app) as c:
        token = (await c.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})).json()[
            "access_token"
        ]
        auth = {"Authorization": f"Bearer {token}"}
        assert (await c.get("/v1/me", headers=auth)).status_code == 200

        await asyncio.to_thread(private_pg.stop)
        for request in (
            c.get("/v1/me", headers=auth),
            c.post("/v1/anonymous"),
            c.patch("/v1/me/data", json={"a": 1}, headers=auth),
            c.get("/v1/me", headers=auth),
        ):
            r: httpx.Response = await request
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "unavailable"
            assert int(r.headers["retry-after"]) > 0
        ready = await c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["error"] == "not_ready"
        assert (await c.get("/healthz")).status_code == 200

        await asyncio.to_thread(private_pg.start)

        async def me_ok() -> bool:
            return (await c.get("/v1/me", headers=auth)).status_code == 200

        await _until(me_ok)
        assert (await c.post("/v1/anonymous")).status_code == 201
        assert (await c.patch("/v1/me/data", json={"a": 1}, headers=auth)).json() == {
            "data": {"a": 1}
        }
        assert (await c.get("/readyz")).status_code == 200
