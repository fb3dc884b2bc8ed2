"""Migrations: upgrade a populated database, downgrade to base, and agree with ``app.models``."""

from __future__ import annotations

import asyncio
import secrets
import uuid

import asyncpg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from app.db import ALEMBIC_INI, create_engine, migration_head
from app.models import metadata


@pytest.fixture
async def scratch_url(server_url: str):
    name = "anonid_mig_" + secrets.token_hex(4)
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    if "?" in server_url:
        base, query = server_url.split("?", 1)
        url = base.rsplit("/", 1)[0] + f"/{name}?{query}"
    else:
        url = server_url.rsplit("/", 1)[0] + f"/{name}"
    yield url
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


def _alembic(url: str, *args: str) -> None:
    config = Config(str(ALEMBIC_INI))
    config.attributes["url"] = url
    getattr(command, args[0])(config, *args[1:])


async def test_every_migration_downgrades_and_upgrades_again_keeping_rows(scratch_url: str) -> None:
    await asyncio.to_thread(_alembic, scratch_url, "upgrade", "head")
    engine = create_engine(scratch_url, pool_size=1)
    user_id = uuid.uuid4()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, username, is_anonymous, data) "
                    "VALUES (:id, 'guest-keep', true, '{\"k\": 1}')"
                ),
                {"id": user_id},
            )
        # Step down one revision at a time to just above base and back up: later migrations
        # must keep the rows the first one created.
        async with engine.connect() as conn:
            revision = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
        assert revision == migration_head()
        await asyncio.to_thread(_alembic, scratch_url, "downgrade", "0001")
        await asyncio.to_thread(_alembic, scratch_url, "upgrade", "head")
        async with engine.connect() as conn:
            data = await conn.scalar(
                sa.text("SELECT data FROM users WHERE id = :id"), {"id": user_id}
            )
        assert data == {"k": 1}

        await engine.dispose()
        await asyncio.to_thread(_alembic, scratch_url, "downgrade", "base")
        async with engine.connect() as conn:
            left = await conn.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'alembic_version'"
                )
            )
            functions = await conn.scalar(
                sa.text("SELECT count(*) FROM pg_proc WHERE proname LIKE 'jsonb_merge%'")
            )
        assert left == 0 and functions == 0
        await engine.dispose()
        await asyncio.to_thread(_alembic, scratch_url, "upgrade", "head")
    finally:
        await engine.dispose()


async def test_models_match_the_migrated_schema(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:

            def diff(sync_conn: sa.Connection) -> list:
                context = MigrationContext.configure(sync_conn)
                return compare_metadata(context, metadata)

            differences = await conn.run_sync(diff)
    finally:
        await engine.dispose()
    assert differences == []


async def test_check_constraint_keeps_anonymous_rows_free_of_credentials(engine) -> None:
    async with engine.connect() as conn:
        with pytest.raises(sa.exc.IntegrityError):
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, username, is_anonymous, email, data) "
                    "VALUES (:id, :u, true, 'x@example.com', '{}')"
                ),
                {"id": uuid.uuid4(), "u": "guest-" + secrets.token_hex(4)},
            )
        await conn.rollback()
        with pytest.raises(sa.exc.IntegrityError):
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, username, is_anonymous, password_hash, data) "
                    "VALUES (:id, :u, true, 'hash', '{}')"
                ),
                {"id": uuid.uuid4(), "u": "guest-" + secrets.token_hex(4)},
            )
        await conn.rollback()


async def test_verified_email_is_unique_case_insensitively(engine) -> None:
    email = f"Case{secrets.token_hex(3)}@Example.com"
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO users (id, is_anonymous, email, password_hash, data) "
                "VALUES (:id, false, :e, 'h', '{}')"
            ),
            {"id": uuid.uuid4(), "e": email},
        )
    async with engine.connect() as conn:
        with pytest.raises(sa.exc.IntegrityError):
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, is_anonymous, email, password_hash, data) "
                    "VALUES (:id, false, :e, 'h', '{}')"
                ),
                {"id": uuid.uuid4(), "e": email.lower()},
            )
        await conn.rollback()
