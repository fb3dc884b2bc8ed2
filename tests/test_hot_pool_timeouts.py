"""The hot pool's time limits (``app.platform.pgpool.HotPool``): a statement PostgreSQL runs too long, a
server that stops answering, and a pool whose every connection stays busy all end in 503 with
``Retry-After``, never a hung request, and the pool serves again afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

import app.platform.db
from app.platform.pgpool import driver_dsn
from tests.conftest import AppFactory, pool_backend_pids
from tests.test_hot_paths import bearer_guest

Started = tuple[FastAPI, httpx.AsyncClient]


@pytest.fixture
def one_connection(
    app_with: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Awaitable[Started]]:
    """Start an app whose one pool has one connection and limits of a second or so."""

    async def start(statement_timeout: int = 1, acquire_timeout: float = 5) -> Started:
        monkeypatch.setattr(app.platform.db, "STATEMENT_TIMEOUT", statement_timeout)
        monkeypatch.setattr(app.platform.db, "SILENT_SERVER_GRACE", 1)
        monkeypatch.setattr(app.platform.db, "ACQUIRE_TIMEOUT", acquire_timeout)
        return await app_with(database_pool_size=1)

    return start


async def _backend_pid(application: FastAPI) -> int:
    pids = await pool_backend_pids(application)
    assert len(pids) == 1
    return pids[0]


@pytest.fixture
async def locker(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(driver_dsn(database_url))
    yield conn
    await conn.close()


async def _lock_user(conn: asyncpg.Connection, c: httpx.AsyncClient, auth: dict[str, Any]) -> None:
    user_id = (await c.get("/v1/me", headers=auth)).json()["id"]
    await conn.execute("BEGIN")
    await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)


async def _lock_users_table(conn: asyncpg.Connection) -> None:
    await conn.execute("BEGIN")
    await conn.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")


def _assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "unavailable"
    assert int(r.headers["retry-after"]) >= 1


async def test_a_statement_over_its_time_limit_is_cancelled_by_postgres_and_answers_503(
    one_connection: Callable[..., Awaitable[Started]], locker: asyncpg.Connection
) -> None:
    application, c = await one_connection()
    auth = await bearer_guest(c)
    pid = await _backend_pid(application)
    await _lock_user(locker, c, auth)
    try:
        _assert_unavailable(await c.patch("/v1/me/data", json={"a": 1}, headers=auth))
    finally:
        await locker.execute("ROLLBACK")
    # PostgreSQL answered (57014), so the connection was healthy and is kept; nothing was written.
    me = await c.get("/v1/me", headers=auth)
    assert me.status_code == 200 and me.json()["data"] == {}
    assert await _backend_pid(application) == pid


async def test_a_server_that_stops_answering_loses_its_connection_and_the_pool_heals(
    one_connection: Callable[..., Awaitable[Started]], locker: asyncpg.Connection
) -> None:
    # Without PostgreSQL's own limit (0 turns it off) the statement waits on the lock as it would
    # on a server that stopped answering: only the client-side watchdog can end the wait.
    application, c = await one_connection(statement_timeout=0)
    auth = await bearer_guest(c)
    pid = await _backend_pid(application)
    await _lock_users_table(locker)
    try:
        waited = asyncio.get_running_loop().time()
        _assert_unavailable(await c.get("/v1/me", headers=auth))
        assert asyncio.get_running_loop().time() - waited < 10
    finally:
        await locker.execute("ROLLBACK")
    assert (await c.get("/v1/me", headers=auth)).status_code == 200
    assert await _backend_pid(application) != pid  # replaced by a new connection


async def test_a_request_waiting_for_a_busy_pool_gives_up_with_503(
    one_connection: Callable[..., Awaitable[Started]],
    locker: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    application, c = await one_connection(acquire_timeout=0.3)  # shorter than the statement's 1 s
    auth = await bearer_guest(c)
    await _lock_user(locker, c, auth)
    try:
        # The first holds the only connection (waiting on the lock); the second cannot get one.
        held = asyncio.create_task(c.patch("/v1/me/data", json={"a": 1}, headers=auth))
        await asyncio.sleep(0.2)
        assert application.state.services.pool.busy == 1
        _assert_unavailable(await c.get("/v1/me", headers=auth))
        _assert_unavailable(await held)
    finally:
        await locker.execute("ROLLBACK")
    assert application.state.services.pool.busy == 0
    assert (await c.get("/v1/me", headers=auth)).status_code == 200
