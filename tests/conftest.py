"""Shared fixtures: a fresh PostgreSQL database migrated by Alembic, and the app over real HTTP.

The database is the service at ``ANONID_TEST_DATABASE_URL`` when set (a new database is created
on it for this run and dropped afterwards), otherwise an embedded PostgreSQL started for the run.
Tests never share data with another run, and never depend on an empty table: each makes its own
accounts and asserts on those.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.platform.db import create_engine, start_embedded, stop_embedded, upgrade_to_head
from app.settings import Settings

BASE_URL = "https://anonid.test"


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A PostgreSQL server: the CI service if named, else an embedded one for this run."""
    external = os.environ.get("ANONID_TEST_DATABASE_URL")
    if external:
        yield _plain(external)
        return
    # Not under pytest's tmp_path: pytest prunes old basetemp folders, and a concurrent run
    # would delete the data directory of a server still in use.
    data_dir = Path(tempfile.mkdtemp(prefix="anonid-test-pg-"))
    yield _plain(start_embedded(data_dir))
    stop_embedded()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """A new database on that server, migrated to head by Alembic, dropped at the end."""
    name = "anonid_test_" + secrets.token_hex(4)
    admin = await asyncpg.connect(_asyncpg_dsn(server_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = _with_database(server_url, name)
    await asyncio.to_thread(upgrade_to_head, url)
    yield url
    admin = await asyncpg.connect(_asyncpg_dsn(server_url))
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


def _asyncpg_dsn(url: str) -> str:
    # asyncpg takes a unix socket directory as ?host=…, the same as libpq.
    return _plain(url)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for a test: nothing from the environment or a .env file leaks in."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "public_url": "https://anonid.test",
        "run_worker": False,
        "cull_interval_minutes": 0,
        # Many tests share one client address; rate-limit tests set their own limits.
        "anonymous_rate_limit": "100000/minute",
        "login_rate_limit": "100000/minute",
        "data_rate_limit": "100000/minute",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings, database_url=settings.database_url)
    async with app.router.lifespan_context(app):
        yield app


def client_for(app: FastAPI, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE_URL, timeout=30, **kwargs
    )


async def pool_backend_pids(application: FastAPI) -> list[int]:
    """The PostgreSQL backends of the app's one pool, idle between requests (the hot paths and the
    transactional ones share them)."""
    pool = application.state.services.engine.sync_engine.pool
    records = list(pool._pool._queue._queue)  # idle connections, in the pool's own queue
    return [
        int(r.driver_connection.get_server_pid())
        for r in records
        if r.driver_connection is not None
    ]


@pytest.fixture(scope="session")
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    async with running_app(make_settings(database_url)) as application:
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as c:
        yield c


AppFactory = Callable[..., Awaitable[tuple[FastAPI, httpx.AsyncClient]]]


@pytest.fixture
async def app_with(database_url: str) -> AsyncIterator[AppFactory]:
    """Start an extra app on the same database with other settings: ``await app_with(**overrides)``."""
    stack: list[Any] = []

    async def start(**overrides: Any) -> tuple[FastAPI, httpx.AsyncClient]:
        manager = running_app(make_settings(database_url, **overrides))
        application = await manager.__aenter__()
        stack.append(manager)
        c = client_for(application)
        stack.append(c)
        return application, c

    yield start
    for item in reversed(stack):
        await item.__aexit__(None, None, None)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """Direct database access for assertions (the test's own connection, not the app's)."""
    e = create_engine(database_url, pool_size=5)
    yield e
    await e.dispose()


@pytest.fixture(scope="module")
async def private_url(server_url: str) -> AsyncIterator[str]:
    """A migrated database of the test module's own, for modules that run an outbox worker
    (see ``tests.outbox_support.private_database``)."""
    from tests.outbox_support import private_database

    async with private_database(server_url) as url:
        yield url


@pytest.fixture
async def db(private_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the module's private database, its outbox emptied first: rows an earlier
    test of the module left behind must not be delivered in this one."""
    e = create_engine(private_url, pool_size=5)
    async with e.begin() as conn:
        await conn.execute(sa.text("DELETE FROM outbox"))
    yield e
    await e.dispose()


@pytest.fixture(scope="session")
def tmp_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="anonid-tests-"))
