"""The outbox wakes workers only for real rows: a statement that queues nothing notifies nobody."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import _asyncpg_dsn

CHANNEL = "anonid_outbox"


async def _control_row(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("INSERT INTO outbox (kind, payload) VALUES ('webhook', '{}'::jsonb)")
        )
        await conn.execute(sa.text("DELETE FROM outbox WHERE payload = '{}'::jsonb"))


async def test_new_anonymous_account_without_webhooks_sends_no_notify(
    client: httpx.AsyncClient, engine: AsyncEngine, database_url: str
) -> None:
    listener = await asyncpg.connect(_asyncpg_dsn(database_url))
    seen: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(CHANNEL, lambda *args: seen.put_nowait("notify"))
    try:
        for _ in range(3):
            created = await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})
            assert created.status_code == 201
        # Notifications arrive in commit order: once the control row's arrives, any from the
        # three accounts would already be queued ahead of it.
        await _control_row(engine)
        await asyncio.wait_for(seen.get(), timeout=15)
        assert seen.empty()
    finally:
        await listener.close()


async def test_several_rows_in_one_transaction_wake_listeners_once(
    engine: AsyncEngine, database_url: str
) -> None:
    listener = await asyncpg.connect(_asyncpg_dsn(database_url))
    seen: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(CHANNEL, lambda *args: seen.put_nowait("notify"))
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO outbox (kind, payload) "
                    "SELECT 'webhook', '{}'::jsonb FROM generate_series(1, 3)"
                )
            )
            await conn.execute(sa.text("DELETE FROM outbox WHERE payload = '{}'::jsonb"))
        await asyncio.wait_for(seen.get(), timeout=15)
        await _control_row(engine)
        await asyncio.wait_for(seen.get(), timeout=15)
        assert seen.empty()
    finally:
        await listener.close()
