"""The hot paths' own asyncpg pool, and statements that run on it or on a SQLAlchemy connection.

A ``Statement`` is written once as SQLAlchemy text and compiled once, at import, for asyncpg
(positional ``$n`` parameters in a fixed order). Domain functions take ``Db``: a SQLAlchemy
connection (the statement joins the caller's transaction) or the hot pool (the statement is its
own transaction, one round trip, without SQLAlchemy's execution layers, which cost the hot paths
more than PostgreSQL did: ``bench/NOTES.md``).

Guarantees of the pool (``HotPool``):
- at most ``size`` connections, each opened when first needed and then kept (no churn);
- a connection lost with the server is replaced on the next acquire, so a PostgreSQL restart
  heals without restarting the service;
- acquiring fails after 5 s when every connection stays busy (then 503, not a hung request);
- a statement ends within about 30 s: PostgreSQL cancels it (``statement_timeout``, set once per
  connection), and a connection whose server does not answer at all is closed by a watchdog
  shortly after;
- releasing a connection costs no round trip (see ``_keep_session``); a connection whose
  statement failed other than by an error PostgreSQL answered is closed instead of reused;
- jsonb comes back decoded with orjson; jsonb parameters are passed as JSON text, as with the
  engine.

The timeouts cost nothing per request while nothing waits or hangs: asyncpg's own (a timer set
and cancelled around every acquire, release and statement) cost about 9 % of the instructions of
``POST /v1/anonymous`` (``bench/NOTES.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any, TypeAlias

import asyncpg  # type: ignore[import-untyped]
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

_DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
ACQUIRE_TIMEOUT = 5  # seconds, as the engine's pool_timeout: then 503, not a hung request
STATEMENT_TIMEOUT = 30  # seconds, enforced by PostgreSQL
WATCHDOG_GRACE = 5  # seconds past STATEMENT_TIMEOUT before a silent server's connection is closed


class Statement:
    """One SQL text, usable on a SQLAlchemy connection or compiled for asyncpg."""

    __slots__ = ("clause", "order", "sql")

    def __init__(self, sql: str) -> None:
        self.clause = sa.text(sql)
        compiled = self.clause.compile(dialect=_DIALECT)
        self.sql: str = compiled.string
        self.order: tuple[str, ...] = tuple(compiled.positiontup or ())

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] for name in self.order]


class HotPool:
    """An ``asyncpg.Pool``, with the guarantees in the module docstring."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.size: int = pool.get_max_size()
        self.busy = 0  # statements holding or awaiting a connection
        self.running: dict[Any, int] = {}  # connection -> watchdog tick its statement started at
        self.tick = 0
        self._watchdog = asyncio.create_task(self._watch(), name="anonid-hot-pool-watchdog")

    async def fetchrow(self, sql: str, args: list[Any]) -> Any:
        # Fewer than `size` statements hold or await a connection, so one is free and acquiring
        # cannot wait: no timer is needed (asyncpg's would be set and cancelled every time).
        timeout = None if self.busy < self.size else ACQUIRE_TIMEOUT
        self.busy += 1
        try:
            async with self.pool.acquire(timeout=timeout) as conn:
                self.running[conn] = self.tick
                try:
                    return await conn.fetchrow(sql, *args)
                except asyncpg.PostgresError as exc:
                    # The connection is gone or the server is going away; a statement that ran
                    # into its timeout (57014) leaves a healthy connection.
                    if exc.sqlstate and exc.sqlstate.startswith(("08", "57P")):
                        conn.terminate()
                    raise
                except BaseException:
                    # Not an error PostgreSQL answered (a lost connection, a cancellation): the
                    # protocol may be mid-operation, and releasing skips asyncpg's reset query
                    # that would have noticed, so this connection is closed, not handed out again.
                    conn.terminate()
                    raise
                finally:
                    del self.running[conn]
        finally:
            self.busy -= 1

    async def _watch(self) -> None:
        """Once a second: close the connection of a statement that PostgreSQL's own timeout has
        not ended (a server or network that stopped answering); its request fails with 503."""
        limit = STATEMENT_TIMEOUT + WATCHDOG_GRACE
        while True:
            await asyncio.sleep(1)
            self.tick += 1
            for conn, started in list(self.running.items()):
                if self.tick - started > limit:
                    conn.terminate()

    async def close(self) -> None:
        self._watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watchdog
        await self.pool.close()


Db: TypeAlias = AsyncConnection | HotPool


async def fetchrow(db: Db, stmt: Statement, params: Mapping[str, Any]) -> Any:
    """The first row (or ``None``): a SQLAlchemy ``Row`` or an asyncpg ``Record``; both index
    by position and ``row_mapping`` reads both by name."""
    if isinstance(db, AsyncConnection):
        return (await db.execute(stmt.clause, params)).first()
    return await db.fetchrow(stmt.sql, stmt.args(params))


def row_mapping(row: Any) -> Mapping[str, Any]:
    """Column access by name for a SQLAlchemy ``Row`` or an asyncpg ``Record``."""
    mapping = getattr(row, "_mapping", None)
    return mapping if mapping is not None else row  # type: ignore[no-any-return]


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=_json_text, decoder=orjson.loads, schema="pg_catalog"
        )
    # Set here rather than as a startup parameter, which poolers such as PgBouncer refuse.
    await conn.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}s'")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to undo on release: hot statements set no session state (no SET, LISTEN or advisory
    locks; the statement timeout is set once, when the connection opens), and asyncpg still rolls
    back a transaction left open. asyncpg's default reset would add a round trip to every
    request."""


def driver_dsn(url: str) -> str:
    """A SQLAlchemy URL (any PostgreSQL driver) as a DSN that asyncpg accepts."""
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


async def create_pool(url: str, size: int) -> HotPool:
    pool = await asyncpg.create_pool(
        driver_dsn(url),
        # Opened on demand, like the engine's, and then kept: reconnecting under a burst would cost
        # more than the requests themselves.
        min_size=0,
        max_size=size,
        max_inactive_connection_lifetime=0,
        init=_init_connection,
        reset=_keep_session,
        timeout=ACQUIRE_TIMEOUT,  # connecting, when a free slot has no connection yet
    )
    return HotPool(pool)
