"""The hot paths' statements, and statements that run on the hot pool or a SQLAlchemy connection.

A ``Statement`` is written once as SQLAlchemy text and compiled once, at import, for asyncpg
(positional ``$n`` parameters in a fixed order). Domain functions take ``Db``: a SQLAlchemy
connection (the statement joins the caller's transaction) or the hot pool (the statement is its
own transaction, one round trip, without SQLAlchemy's execution layers, which cost the hot paths
more than PostgreSQL did: ``bench/NOTES.md``).

Guarantees of the hot pool (``HotPool``):
- it holds no connections of its own: each statement runs on the asyncpg connection of one
  checked out of the process's one engine (``app.platform.db``), so requests of every kind share
  ``ANONID_DATABASE_POOL_SIZE`` connections;
- a connection that is free is checked out without a greenlet or a timer (a synchronous checkout
  of SQLAlchemy's pool); when every connection is busy, it waits in the pool's own line (the same
  line as the engine's checkouts) for at most ``ACQUIRE_TIMEOUT``, then 503, not a hung request;
  a slot with no connection yet is opened by the engine's checkout;
- a connection lost with the server, or whose statement failed other than by an error
  PostgreSQL answered, is invalidated (the pool opens a new one), so a PostgreSQL restart heals
  without restarting the service;
- a statement ends within the engine's time limits (``app.platform.db._connect_args``);
- the statement sets no session state and opens no transaction, so returning the connection
  costs no round trip (SQLAlchemy's reset has no transaction to roll back);
- jsonb comes back decoded with orjson; jsonb parameters are passed as JSON text, as with the
  engine (the engine's codecs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, TypeAlias

import asyncpg  # type: ignore[import-untyped]
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.exc import MissingGreenlet
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection, QueuePool

from app.platform import db
from app.platform.db import driver_dsn

__all__ = ["Db", "HotPool", "Statement", "driver_dsn", "fetchrow", "row_mapping"]

_DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]


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
    """The hot paths' statements on the engine's connections, with the guarantees above."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        pool = engine.sync_engine.pool
        assert isinstance(pool, QueuePool)
        self._pool = pool
        self.size: int = pool.size()
        self.busy = 0  # statements holding or awaiting a connection

    async def _checkout(self) -> PoolProxiedConnection:
        pool = self._pool
        line = pool._pool._queue  # type: ignore[attr-defined]  # asyncio.Queue of idle records
        idle = line._queue
        if not idle and pool._overflow >= pool._max_overflow:
            # Every connection exists and is busy: wait in the pool's own line (first come, first
            # served with the engine's checkouts), without the greenlet and task of the engine's
            # wait, then put the record back at the head for the checkout below to take.
            async with asyncio.timeout(db.ACQUIRE_TIMEOUT):
                idle.appendleft(await line.get())
        # A free connection is taken synchronously: no greenlet is needed unless the slot must
        # (re)connect, which only the engine's own checkout can do. The pool hands out its idle
        # connections first in, first out; one without a connection (invalidated) is left to it.
        if idle and idle[0].dbapi_connection is not None:
            try:
                return pool.connect()
            except MissingGreenlet:  # the whole pool was invalidated after a lost connection
                pass
        return await self.engine.raw_connection()

    async def fetchrow(self, sql: str, args: list[Any]) -> Any:
        return await self._execute("fetchrow", sql, args)

    async def fetch(self, sql: str, args: list[Any]) -> list[Any]:
        return await self._execute("fetch", sql, args)  # type: ignore[no-any-return]

    async def _execute(self, method: str, sql: str, args: list[Any]) -> Any:
        self.busy += 1
        try:
            fairy = await self._checkout()
            conn = fairy.driver_connection
            assert conn is not None
            broken = True
            try:
                result = await getattr(conn, method)(sql, *args)
                broken = False
                return result
            except asyncpg.PostgresError as exc:
                # A statement that ran into its time limit (57014) or any other error PostgreSQL
                # answered leaves a healthy connection, unless the server is going away.
                broken = bool(exc.sqlstate and exc.sqlstate.startswith(("08", "57P")))
                raise
            finally:
                # Not an error PostgreSQL answered (a lost connection, a timeout, a cancellation):
                # the protocol may be mid-operation, so the connection is closed, not reused.
                if broken:
                    fairy.invalidate()
                else:
                    fairy.close()
        finally:
            self.busy -= 1

    async def close(self) -> None:
        """Nothing of its own to close: the engine's owner disposes of it."""


Db: TypeAlias = AsyncConnection | HotPool


async def fetchrow(db: Db, stmt: Statement, params: Mapping[str, Any]) -> Any:
    """The first row (or ``None``): a SQLAlchemy ``Row`` or an asyncpg ``Record``; both index
    by position and ``row_mapping`` reads both by name."""
    if isinstance(db, AsyncConnection):
        return (await db.execute(stmt.clause, params)).first()
    return await db.fetchrow(stmt.sql, stmt.args(params))


async def fetch(db: Db, stmt: Statement, params: Mapping[str, Any]) -> list[Any]:
    """Every row, as ``fetchrow`` gives one."""
    if isinstance(db, AsyncConnection):
        return list((await db.execute(stmt.clause, params)).all())
    return await db.fetch(stmt.sql, stmt.args(params))


def row_mapping(row: Any) -> Mapping[str, Any]:
    """Column access by name for a SQLAlchemy ``Row`` or an asyncpg ``Record``."""
    mapping = getattr(row, "_mapping", None)
    return mapping if mapping is not None else row  # type: ignore[no-any-return]
