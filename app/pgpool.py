"""The hot paths' own asyncpg pool, and statements that run on it or on a SQLAlchemy connection.

A ``Statement`` is written once as SQLAlchemy text and compiled once, at import, for asyncpg
(positional ``$n`` parameters in a fixed order). Domain functions take ``Db``: a SQLAlchemy
connection (the statement joins the caller's transaction) or the hot pool (the statement is its
own transaction, one round trip, without SQLAlchemy's execution layers, which cost the hot paths
more than PostgreSQL did: ``bench/NOTES.md``).

Guarantees of the pool:
- at most ``size`` connections, each opened when first needed and then kept (no churn);
- a connection lost with the server is replaced on the next acquire, so a PostgreSQL restart
  heals without restarting the service; acquiring fails fast (5 s) and statements time out (30 s);
- releasing a connection costs no round trip (see ``_keep_session``); a connection whose
  statement failed other than by an error PostgreSQL answered is closed instead of reused;
- jsonb comes back decoded with orjson; jsonb parameters are passed as JSON text, as with the
  engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeAlias

import asyncpg  # type: ignore[import-untyped]
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

_DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
ACQUIRE_TIMEOUT = 5  # seconds, as the engine's pool_timeout: then 503, not a hung request


class Pool(Protocol):
    """The part of ``asyncpg.Pool`` used here (asyncpg has no type hints)."""

    def acquire(self, *, timeout: float | None = None) -> AbstractAsyncContextManager[Any]: ...

    async def close(self) -> None: ...


Db: TypeAlias = AsyncConnection | Pool


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


async def fetchrow(db: Db, stmt: Statement, params: Mapping[str, Any]) -> Any:
    """The first row (or ``None``): a SQLAlchemy ``Row`` or an asyncpg ``Record``; both index
    by position and ``row_mapping`` reads both by name."""
    if isinstance(db, AsyncConnection):
        return (await db.execute(stmt.clause, params)).first()
    async with db.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
        try:
            return await conn.fetchrow(stmt.sql, *stmt.args(params))
        except asyncpg.PostgresError as exc:
            if exc.sqlstate and exc.sqlstate.startswith(("08", "57")):
                conn.terminate()
            raise
        except BaseException:
            # Not an error PostgreSQL answered (a lost connection, a timeout, a cancellation):
            # the protocol may be mid-operation, and releasing skips asyncpg's reset query that
            # would have noticed, so this connection is closed rather than handed out again.
            conn.terminate()
            raise


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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to undo on release: hot statements set no session state (no SET, LISTEN or advisory
    locks), and asyncpg still rolls back a transaction left open. asyncpg's default reset would
    add a round trip to every request."""


def driver_dsn(url: str) -> str:
    """A SQLAlchemy URL (any PostgreSQL driver) as a DSN that asyncpg accepts."""
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


async def create_pool(url: str, size: int) -> Pool:
    return await asyncpg.create_pool(  # type: ignore[no-any-return]
        driver_dsn(url),
        # Opened on demand, like the engine's, and then kept: reconnecting under a burst would cost
        # more than the requests themselves.
        min_size=0,
        max_size=size,
        max_inactive_connection_lifetime=0,
        init=_init_connection,
        reset=_keep_session,
        timeout=5,
        command_timeout=30,
    )
