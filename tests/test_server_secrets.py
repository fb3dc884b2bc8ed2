"""Server secrets: written once, the same in every process, loaded at start, never shown."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.server_secrets import SECRET_BYTES, load_server_secrets
from tests.conftest import AppFactory


async def test_processes_starting_together_agree_on_one_secret(engine: AsyncEngine) -> None:
    name = "test-" + asyncio.current_task().get_name()  # type: ignore[union-attr]

    async def start() -> bytes:
        async with engine.begin() as conn:
            return (await load_server_secrets(conn, [name]))[name]

    values = await asyncio.gather(*(start() for _ in range(4)))
    assert len(set(values)) == 1 and len(values[0]) == SECRET_BYTES
    async with engine.begin() as conn:
        stored = await conn.scalar(
            sa.text("SELECT value FROM server_secrets WHERE name = :n"), {"n": name}
        )
        assert bytes(stored) == values[0]
        await conn.execute(sa.text("DELETE FROM server_secrets WHERE name = :n"), {"n": name})


async def test_every_app_loads_the_stored_csrf_secret_and_never_shows_it(
    app: FastAPI, app_with: AppFactory, engine: AsyncEngine
) -> None:
    other, _ = await app_with()
    async with engine.connect() as conn:
        stored = bytes(
            await conn.scalar(sa.text("SELECT value FROM server_secrets WHERE name = 'csrf'"))
        )
    for application in (app, other):
        secrets_ = application.state.services.server_secrets
        assert secrets_["csrf"] == stored
        assert stored.hex() not in repr(secrets_) and repr(stored) not in repr(secrets_)
