"""The cull (CONTRACT §9): stale anonymous accounts are deleted in batches.

Guarantees:
- only anonymous accounts whose ``updated_at`` is older than the cutoff are deleted, and a row
  touched by another connection while the cull runs is never deleted (rows locked by someone else
  are skipped, and the guard is re-checked on the row the DELETE actually removes);
- each batch is its own short transaction, writing one ``user.culled`` event with exactly the
  batch's deleted ids (in the same statement as the DELETE);
- one culler runs at a time across every process on the database: an advisory lock held for the
  whole run by a transaction of its own on a second connection (``lock_engine``: the direct one
  when configured, else a pooled one; transaction-scoped, so it works through a transaction pooler
  and can never stay behind on a pooled connection). Each batch first checks that this
  transaction is still open, so a culler whose lock connection died stops. A second culler
  returns at once with ``deleted == 0`` and logs why;
- link tokens and emails of culled accounts go with them (``ON DELETE CASCADE``).

Two walks, chosen per run from the stale count (served by the partial index) and the table's size:
- few stale rows (the hourly cull of a steady service): the partial index, in ``updated_at``
  order; each batch starts where the previous one stopped, so it never rescans the index entries
  of rows already deleted;
- a backlog of at least one stale row per heap page (a first cull, a cull after downtime): the
  heap in physical order (a TID range scan), each page visited once. In ``updated_at`` order such a
  cull would lock and delete rows on pages all over the table, dirtying and writing each page once
  per stale row on it, and the WAL of those writes is what concurrent commits wait behind.
A row skipped because someone held its lock is left to the next run, unless it is touched (then
it is fresh).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.lifecycle.events import event_cte
from app.platform import metrics
from app.platform.db import CULL_LOCK
from app.platform.ids import new_id
from app.settings import Settings

log = logging.getLogger("anonid.cull")

MAX_BATCH_SIZE = 10_000
# Rows per batch unless told otherwise (the worker, the admin endpoint, `anonid cull`). At full
# scale on the 2-core bench machine (1,000,000 stale among 2,000,000) 1,000-row batches culled
# faster (0.47 x the plain DELETE against 0.33 x) and disturbed concurrent requests less (POST
# p99 168 ms against 323 ms) than 5,000-row ones: each batch is one commit of its WAL, which
# concurrent commits wait behind (bench/NOTES.md).
DEFAULT_BATCH_SIZE = 1_000
# After each full batch the culler rests PAUSE_RATIO times as long as the batch took, so a backlog
# takes at most half of a core and half of the WAL flushes: at 20 million accounts on the 2-core
# bench machine, culling flat out doubled the p99 of concurrent POST /v1/anonymous (2.22 x, against
# the 2 x target; bench/RESULTS.md, "Scale"). A steady service's hourly cull is one short batch.
PAUSE_RATIO = 1.0
# At least a day: an explicit override may undercut ANONID_CULL_AFTER_DAYS, but "0" would wipe
# every guest who is not mid-request, which no operator means.
MIN_OLDER_THAN_DAYS = 1
MAX_OLDER_THAN_DAYS = 36_500

_TRY_LOCK = sa.text(
    "SELECT pg_try_advisory_xact_lock(:key) AS got, now() - make_interval(days => :days) AS cutoff"
)
_STILL_HELD = sa.text("SELECT 1")

# Served by the partial index ix_users_anonymous_updated_at (is_anonymous is its predicate).
_COUNT = sa.text("SELECT count(*) FROM users WHERE is_anonymous AND updated_at < :cutoff")

# The inner SELECT takes row locks in index order, skipping rows another transaction holds (a
# request touching the account), and hands their ctids to the DELETE (a TID scan, no index lookups).
# We hold those locks, so the locked version cannot move; if it is newer than the statement's
# snapshot (a touch committed between the snapshot and the lock) the TID scan does not see it and
# the row stays, and the outer guard re-checks the version actually deleted. ``:after`` resumes the
# index scan where the previous batch stopped (NULL: from the start). ORDER BY costs nothing (the
# partial index returns that order) and keeps the planner off a sequential scan.
STALE_BATCH = sa.text(
    """
DELETE FROM users
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM users
    WHERE is_anonymous AND updated_at < :cutoff
      AND updated_at >= COALESCE(CAST(:after AS timestamptz), '-infinity')
    ORDER BY updated_at
    LIMIT :n
    FOR UPDATE SKIP LOCKED
))
  AND is_anonymous AND updated_at < :cutoff
RETURNING id, updated_at
"""
)

# The same guarded DELETE for a backlog, walking the heap in physical order: a TID range scan from
# just after the last row the previous batch deleted to the table's end when the run started (rows
# on later pages were written since, so they are fresh). A TID range scan reads forwards, page by
# page, so LIMIT stops it after :n rows and every page is visited once per run.
HEAP_BATCH = sa.text(
    """
DELETE FROM users
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM users
    WHERE ctid > CAST(:after_tid AS tid) AND ctid < CAST(:end_tid AS tid)
      AND is_anonymous AND updated_at < :cutoff
    LIMIT :n
    FOR UPDATE SKIP LOCKED
))
  AND is_anonymous AND updated_at < :cutoff
RETURNING id, ctid
"""
)

# A run walks the heap instead of the index when there is at least this many stale rows per page.
HEAP_WALK_ROWS_PER_PAGE = 1.0

_PAGES = sa.text("SELECT pg_relation_size('users') / current_setting('block_size')::bigint")

# The user.culled event (and its webhook deliveries) is built from the DELETE's RETURNING rows in
# the same statement: one round trip per batch, and the event names exactly the rows deleted. No
# rows, no event.
_EVENT_FROM_BATCH = event_cte(
    "SELECT CAST(:event_id AS uuid), CAST(:event_type AS text), CAST(NULL AS uuid),\n"
    "        jsonb_build_object('ids', jsonb_agg(id::text)), now()\n"
    "    FROM batch HAVING count(*) > 0"
)


def _with_event(batch: sa.TextClause, columns: str) -> sa.TextClause:
    return sa.text(f"WITH batch AS ({batch.text}),{_EVENT_FROM_BATCH}SELECT {columns} FROM batch")


_CULL_BATCH = _with_event(STALE_BATCH, "id, updated_at")
# Only the count and where to resume come back: a backlog's ids are not worth sending to the client.
_CULL_HEAP_BATCH = _with_event(HEAP_BATCH, "count(*) AS deleted, max(ctid) AS last")


def _result(
    cutoff: datetime, *, matched: int, deleted: int, batches: int, dry_run: bool
) -> dict[str, Any]:
    return {
        "cutoff": cutoff.isoformat(),
        "matched": matched,
        "deleted": deleted,
        "batches": batches,
        "dry_run": dry_run,
    }


async def _execute(
    conn: AsyncConnection,
    statement: sa.TextClause,
    cutoff: datetime,
    batch_size: int,
    webhook_urls: list[str],
    position: dict[str, Any],
) -> sa.CursorResult[Any]:
    """Run one batch statement (either walk): its guard, size, event and where it starts."""
    params = {
        "cutoff": cutoff,
        "n": batch_size,
        "event_id": new_id(),
        "event_type": "user.culled",
        "webhook_urls": webhook_urls,
    }
    return await conn.execute(statement, params | position)


async def cull_batch(
    conn: AsyncConnection, cutoff: datetime, batch_size: int, webhook_urls: list[str]
) -> list[str]:
    """Delete one batch of stale anonymous accounts in the caller's transaction; their ids."""
    ids, _ = await _cull_batch(conn, cutoff, batch_size, webhook_urls, None)
    return ids


async def _cull_batch(
    conn: AsyncConnection,
    cutoff: datetime,
    batch_size: int,
    webhook_urls: list[str],
    after: datetime | None,
) -> tuple[list[str], datetime | None]:
    """One batch: the deleted ids and the newest ``updated_at`` among them (where to resume)."""
    result = await _execute(conn, _CULL_BATCH, cutoff, batch_size, webhook_urls, {"after": after})
    rows = result.all()
    ids = [str(row.id) for row in rows]
    return ids, max((row.updated_at for row in rows), default=after)


async def _cull_heap_batch(
    conn: AsyncConnection,
    cutoff: datetime,
    batch_size: int,
    webhook_urls: list[str],
    after: tuple[int, int],
    end_page: int,
) -> tuple[int, tuple[int, int]]:
    """One batch of a heap walk: how many rows it deleted, and the last ctid (where to resume)."""
    result = await _execute(
        conn,
        _CULL_HEAP_BATCH,
        cutoff,
        batch_size,
        webhook_urls,
        {"after_tid": after, "end_tid": (end_page, 0)},
    )
    row = result.one()
    return int(row.deleted), (tuple(row.last) if row.last is not None else after)


def walks_heap(matched: int, pages: int) -> bool:
    """Whether a run with ``matched`` stale rows in a ``pages``-page table walks the heap."""
    return matched > 0 and matched >= HEAP_WALK_ROWS_PER_PAGE * max(pages, 1)


async def run_cull(
    engine: AsyncEngine,
    settings: Settings,
    *,
    dry_run: bool = False,
    older_than_days: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lock_engine: AsyncEngine | None = None,
) -> dict[str, Any]:
    """Cull now; returns ``{"cutoff", "matched", "deleted", "batches", "dry_run"}``.

    ``older_than_days`` defaults to ``ANONID_CULL_AFTER_DAYS``; ``dry_run`` only counts. The run
    holds two connections: one of ``lock_engine`` (default: ``engine``) for the lock, one of
    ``engine`` for the batches.
    """
    days = settings.cull_after_days if older_than_days is None else older_than_days
    if not MIN_OLDER_THAN_DAYS <= days <= MAX_OLDER_THAN_DAYS:
        raise ValueError(
            f"older_than_days must be between {MIN_OLDER_THAN_DAYS} and {MAX_OLDER_THAN_DAYS}"
        )
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")

    # The lock's transaction stays open (idle, holding no snapshot) while the batches commit on
    # another connection; ending it, however the run ends, releases the lock.
    async with (lock_engine or engine).connect() as holder, holder.begin():
        row = (await holder.execute(_TRY_LOCK, {"key": CULL_LOCK, "days": days})).one()
        cutoff: datetime = row.cutoff
        if not row.got:
            log.info("cull skipped: another culler holds the cull lock")
            return _result(cutoff, matched=0, deleted=0, batches=0, dry_run=dry_run)
        async with engine.connect() as conn:
            return await _cull_locked(conn, holder, settings, cutoff, dry_run, batch_size)


async def _cull_locked(
    conn: AsyncConnection,
    holder: AsyncConnection,
    settings: Settings,
    cutoff: datetime,
    dry_run: bool,
    batch_size: int,
) -> dict[str, Any]:
    matched = int(await conn.scalar(_COUNT, {"cutoff": cutoff}) or 0)
    await conn.commit()
    if dry_run:
        log.info("cull dry run: %d stale anonymous accounts before %s", matched, cutoff)
        return _result(cutoff, matched=matched, deleted=0, batches=0, dry_run=True)
    pages = int(await conn.scalar(_PAGES) or 0)
    await conn.commit()
    heap_walk = walks_heap(matched, pages)
    deleted = batches = 0
    after: datetime | None = None
    after_tid = (0, 0)  # ctid offsets start at 1: "after (0,0)" is the first page's first row
    while True:
        await holder.execute(_STILL_HELD)  # raises if the lock's connection is gone
        started = time.monotonic()
        async with conn.begin():
            if heap_walk:
                count, after_tid = await _cull_heap_batch(
                    conn, cutoff, batch_size, settings.webhook_url_list, after_tid, pages
                )
            else:
                ids, after = await _cull_batch(
                    conn, cutoff, batch_size, settings.webhook_url_list, after
                )
                count = len(ids)
        if count:
            batches += 1
            deleted += count
            metrics.CULL_DELETED.inc(count)
        # SKIP LOCKED rows do not count towards LIMIT, so a short batch means nothing is left.
        if count < batch_size:
            break
        await asyncio.sleep((time.monotonic() - started) * PAUSE_RATIO)
    log.info(
        "cull deleted %d stale anonymous accounts in %d batches (%s order)",
        deleted,
        batches,
        "heap" if heap_walk else "index",
    )
    return _result(cutoff, matched=matched, deleted=deleted, batches=batches, dry_run=False)
