"""The worker's housekeeping: the daily rollup, retention and the refreshed counts, on a timer.

Guarantees:
- runs at start, then the rollup and retention every ``RETENTION_SECONDS`` (at least once a
  minute, whatever ``ANONID_CULL_INTERVAL_MINUTES`` is), the rollup alone every
  ``rollup.ROLLUP_SECONDS`` and the counts every ``counts.REFRESH_SECONDS``;
- the rollup runs before retention, so a day is in ``daily_stats`` before its events can go
  (retention also seals it itself);
- every step is safe to run in several processes at once, so each worker runs it (the recount
  is skipped where another process has just made it); a failing step is logged and tried again
  at the next round, never stopping the worker.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from app.lifecycle import counts
from app.lifecycle.rollup import ROLLUP_SECONDS, roll_up
from app.outbox.retention import remove_expired
from app.settings import Settings

log = logging.getLogger("anonid.housekeeping")

RETENTION_SECONDS = 60.0


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


async def roll_up_and_remove_expired(engine: AsyncEngine, settings: Settings) -> None:
    """One round of the rollup then retention (failures logged, not raised)."""
    try:
        async with engine.begin() as conn:
            rolled = await roll_up(conn)
        if rolled:
            log.debug("rolled up %s day(s) into daily_stats", rolled)
        await remove_expired(engine, settings)
    except Exception as exc:
        log.warning(
            "rollup or retention failed, next round in %.0fs: %s", RETENTION_SECONDS, _describe(exc)
        )


async def roll_up_now(engine: AsyncEngine) -> None:
    """One rollup (failures logged, not raised)."""
    try:
        async with engine.begin() as conn:
            await roll_up(conn)
    except Exception as exc:
        log.warning("rollup failed, next round in %.0fs: %s", ROLLUP_SECONDS, _describe(exc))


async def refresh_counts(engine: AsyncEngine) -> None:
    """Recount accounts per state and MAU into ``stats_counts`` (failures logged, not raised)."""
    try:
        async with engine.begin() as conn:
            await counts.refresh_if_due(conn)
    except Exception as exc:
        log.warning("account counts not refreshed: %s", _describe(exc))


async def _retention_loop(engine: AsyncEngine, settings: Settings) -> None:
    while True:
        await roll_up_and_remove_expired(engine, settings)
        await asyncio.sleep(RETENTION_SECONDS)


async def _rollup_loop(engine: AsyncEngine) -> None:
    while True:
        await asyncio.sleep(ROLLUP_SECONDS)  # the retention loop rolls up at start
        await roll_up_now(engine)


async def _counts_loop(engine: AsyncEngine) -> None:
    while True:
        await refresh_counts(engine)
        await asyncio.sleep(counts.REFRESH_SECONDS)


async def housekeeping_loop(engine: AsyncEngine, settings: Settings) -> None:
    """Run until cancelled. The counts and the rollup have loops of their own, so a long first
    retention round (a backlog) does not let them grow stale."""
    async with asyncio.TaskGroup() as group:
        group.create_task(_retention_loop(engine, settings), name="anonid-retention")
        group.create_task(_rollup_loop(engine), name="anonid-rollup")
        group.create_task(_counts_loop(engine), name="anonid-counts")
