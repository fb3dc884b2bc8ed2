"""Async Alembic environment.

The URL comes from ``config.attributes["url"]`` (tests and ``anonid migrate`` pass it) or from the
anonid settings (``ANONID_DATABASE_DIRECT_URL`` when set, else ``ANONID_DATABASE_URL``), so plain
``alembic upgrade head`` from the repository root works too; with neither it migrates the embedded
PostgreSQL under ``ANONID_DATA_DIR``. All of a run is one transaction, and its lock is
transaction-scoped, so it also works through a transaction pooler (with unnamed statements).
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection

from app.models import metadata
from app.platform.db import (
    MIGRATION_LOCK,
    async_url,
    create_engine,
    migration_url,
    resolve_database_url,
)
from app.settings import load_settings

config = context.config
target_metadata = metadata


def _url() -> str:
    url = config.attributes.get("url")
    if url:
        return async_url(str(url))
    settings = load_settings()
    return migration_url(settings, resolve_database_url(settings))


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        # Several processes may start at once; one migrates, the others wait and find it done.
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


async def _online() -> None:
    engine = create_engine(_url(), pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_online())
