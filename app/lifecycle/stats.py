"""Operator statistics (``GET /v1/admin/stats``, ``anonid stats``), read without scanning a table.

Definitions (all dates and months in UTC):
- ``users``: accounts now, by state; ``pending`` is an anonymous account with an unexpired
  conversion request (the same rule as ``users.state_of``). Read from the worker's refreshed
  counts, at most 60 seconds old (``app.lifecycle.counts``).
- ``daily``: the last ``days`` days (30 unless asked, at most 400), today included, oldest first,
  zero-filled; counts of the events ``user.anonymous_created``, ``user.conversion_started``,
  ``user.converted``, ``user.merged`` that day, and ``culled`` = the number of ids in that day's
  ``user.culled`` events. Each day comes from its ``daily_stats`` row (``app.lifecycle.rollup``),
  so it outlives the events retention removes, plus the events after that row's
  ``rolled_until`` (today's last minutes, or any day the worker has not reached), counted
  through the events' index.
- ``conversion_rate_30d``: ``user.converted`` events divided by ``user.anonymous_created`` events
  over the last 30 days (0.0 when nobody arrived), rounded to 4 places. A funnel ratio of flows,
  not a cohort: an account created 40 days ago and converted today counts in the numerator.
- ``mau``: accounts that exist now and were touched (``updated_at``, set at creation too) in the
  current calendar month, split by ``is_anonymous``; refreshed like ``users``.
- ``outbox``: rows not yet delivered and not given up on (``pending``), and given up (``failed``),
  counted through their partial indexes.
Erased accounts keep their anonymised events, so past days do not change when a user is erased.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.lifecycle.counts import read_counts
from app.lifecycle.rollup import FIGURES, MAX_DAYS, RANGE_FIGURES, live_ranges

DAYS = 30

_WINDOW = sa.text(
    """
SELECT d::date AS day
FROM generate_series((now() AT TIME ZONE 'UTC')::date - (:days - 1),
                     (now() AT TIME ZONE 'UTC')::date, interval '1 day') AS d
ORDER BY 1
"""
)

_ROLLED = sa.text(
    f"SELECT day, rolled_until, {', '.join(FIGURES)} FROM daily_stats"
    " WHERE day >= :first AND day <= :last"
)

_LIVE = sa.text(RANGE_FIGURES)

# Both served by partial indexes (ix_outbox_due, ix_outbox_failed_at), never the whole table.
_OUTBOX = sa.text(
    """
SELECT
    (SELECT count(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL) AS pending,
    (SELECT count(*) FROM outbox WHERE failed_at IS NOT NULL) AS failed
"""
)


async def outbox_depth(conn: AsyncConnection) -> dict[str, int]:
    """Rows waiting for delivery (``pending``) and rows given up on (``failed``)."""
    row = (await conn.execute(_OUTBOX)).one()
    return {"pending": int(row.pending), "failed": int(row.failed)}


async def daily_figures(conn: AsyncConnection, days: int) -> list[dict[str, Any]]:
    """The last ``days`` UTC days, oldest first: each day's row plus its events after the row."""
    window: list[date] = list(await conn.scalars(_WINDOW, {"days": days}))
    rolled = {
        row.day: row
        for row in await conn.execute(_ROLLED, {"first": window[0], "last": window[-1]})
    }
    figures = {day: dict.fromkeys(FIGURES, 0) for day in window}
    for day, row in rolled.items():
        figures[day] = {key: int(getattr(row, key)) for key in FIGURES}
    ranges = live_ranges(window, rolled)
    if ranges:
        days_, t0s, t1s = zip(*ranges, strict=True)
        live = await conn.execute(_LIVE, {"days": list(days_), "t0s": list(t0s), "t1s": list(t1s)})
        for row in live:
            for key in FIGURES:
                figures[row.day][key] += int(getattr(row, key))
    return [{"date": day.isoformat(), **figures[day]} for day in window]


async def collect_stats(conn: AsyncConnection, days: int = DAYS) -> dict[str, Any]:
    """The stats object of CONTRACT §5; run it in one transaction for a consistent picture."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}")
    daily = await daily_figures(conn, max(days, DAYS))
    last_30 = daily[-DAYS:]
    counts = await read_counts(conn)
    outbox = await outbox_depth(conn)
    created = sum(day["anonymous_created"] for day in last_30)
    converted = sum(day["converted"] for day in last_30)
    return {
        "users": {
            "anonymous": counts["anonymous"],
            "pending": counts["pending"],
            "registered": counts["registered"],
        },
        "daily": daily[-days:],
        "conversion_rate_30d": round(converted / created, 4) if created else 0.0,
        "mau": {
            "month": counts["mau_month"],
            "anonymous": counts["mau_anonymous"],
            "registered": counts["mau_registered"],
        },
        "outbox": outbox,
    }
