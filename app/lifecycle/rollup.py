"""The daily funnel kept in ``daily_stats``, so stats keep their days after retention.

Guarantees:
- a UTC day is rolled up once it has been closed for ``CLOSE_GRACE`` (a transaction that began
  before midnight and commits just after still lands in its day), into a row of its own;
  rolling up is idempotent (``ON CONFLICT DO NOTHING``) and any number of workers may run it;
- only the worker writes ``daily_stats``: requests never touch it, so the hot paths gain no
  contended row;
- before retention removes any event of a reportable day it *seals* that day, recomputing its
  figures from the events still all present; a sealed day never changes again. Events moved or
  committed into a day after it was rolled up count once it is sealed;
- days older than ``MAX_DAYS`` are never reported, so they are neither rolled up nor sealed.

The figures of a day are those of CONTRACT §5's ``daily``: counts of the events
``user.anonymous_created``, ``user.conversion_started``, ``user.converted`` and ``user.merged``,
and ``culled`` = the ids in that day's ``user.culled`` events. Each is read through the
``(type, created_at)`` index of ``events``, one day at a time.
"""

from __future__ import annotations

from datetime import date, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

MAX_DAYS = 400
CLOSE_GRACE = timedelta(minutes=10)
FIGURES = ("anonymous_created", "conversions_started", "converted", "merged", "culled")

# The figures of each day in the array :days, computed from the events: two index range scans
# per day (the four counted types, then the culled batches, whose payload is read).
DAY_FIGURES = """
SELECT d.day, f.anonymous_created, f.conversions_started, f.converted, f.merged, c.culled
FROM unnest(CAST(:days AS date[])) AS d(day)
CROSS JOIN LATERAL (
    SELECT
        count(*) FILTER (WHERE e.type = 'user.anonymous_created') AS anonymous_created,
        count(*) FILTER (WHERE e.type = 'user.conversion_started') AS conversions_started,
        count(*) FILTER (WHERE e.type = 'user.converted') AS converted,
        count(*) FILTER (WHERE e.type = 'user.merged') AS merged
    FROM events e
    WHERE e.type IN ('user.anonymous_created', 'user.conversion_started', 'user.converted',
                     'user.merged')
      AND e.created_at >= d.day::timestamp AT TIME ZONE 'UTC'
      AND e.created_at < (d.day + 1)::timestamp AT TIME ZONE 'UTC'
) f
CROSS JOIN LATERAL (
    SELECT coalesce(sum(jsonb_array_length(e.payload -> 'ids'))
                    FILTER (WHERE jsonb_typeof(e.payload -> 'ids') = 'array'), 0) AS culled
    FROM events e
    WHERE e.type = 'user.culled'
      AND e.created_at >= d.day::timestamp AT TIME ZONE 'UTC'
      AND e.created_at < (d.day + 1)::timestamp AT TIME ZONE 'UTC'
) c
"""

_COLUMNS = ", ".join(FIGURES)

# Closed, reportable days that have no row yet (at most MAX_DAYS of them).
_UNROLLED = sa.text(
    """
SELECT d::date AS day
FROM generate_series(
    (now() AT TIME ZONE 'UTC')::date - (:max_days - 1),
    ((now() - CAST(:grace AS interval)) AT TIME ZONE 'UTC')::date - 1,
    interval '1 day'
) AS d
WHERE NOT EXISTS (SELECT FROM daily_stats s WHERE s.day = d::date)
ORDER BY 1
"""
)

_ROLL = sa.text(
    f"""
INSERT INTO daily_stats (day, {_COLUMNS}, sealed, rolled_at)
SELECT day, {_COLUMNS}, false, now() FROM ({DAY_FIGURES}) AS figures
ON CONFLICT (day) DO NOTHING
"""
)

# Reportable days that start before :cutoff (retention may remove some of their events) and
# are not sealed yet.
_UNSEALED = sa.text(
    """
SELECT d::date AS day
FROM generate_series(
    (now() AT TIME ZONE 'UTC')::date - (:max_days - 1),
    (CAST(:cutoff AS timestamptz) AT TIME ZONE 'UTC')::date,
    interval '1 day'
) AS d
WHERE NOT EXISTS (SELECT FROM daily_stats s WHERE s.day = d::date AND s.sealed)
ORDER BY 1
"""
)

_SEAL = sa.text(
    f"""
INSERT INTO daily_stats (day, {_COLUMNS}, sealed, rolled_at)
SELECT day, {_COLUMNS}, true, now() FROM ({DAY_FIGURES}) AS figures
ON CONFLICT (day) DO UPDATE SET
    anonymous_created = excluded.anonymous_created,
    conversions_started = excluded.conversions_started,
    converted = excluded.converted,
    merged = excluded.merged,
    culled = excluded.culled,
    sealed = true,
    rolled_at = excluded.rolled_at
WHERE NOT daily_stats.sealed
"""
)

# Days per statement: a day of 125,000 events takes about 30 ms to count.
CHUNK = 31


async def _write(conn: AsyncConnection, statement: sa.TextClause, days: list[date]) -> int:
    written = 0
    for start in range(0, len(days), CHUNK):
        result = await conn.execute(statement, {"days": days[start : start + CHUNK]})
        written += result.rowcount
    return written


async def roll_up_closed_days(conn: AsyncConnection) -> int:
    """Write the row of every closed, reportable day that has none; the number written."""
    days = list(await conn.scalars(_UNROLLED, {"max_days": MAX_DAYS, "grace": CLOSE_GRACE}))
    return await _write(conn, _ROLL, days)


async def seal_days_before(conn: AsyncConnection, cutoff: object) -> int:
    """Seal every reportable day that starts before ``cutoff``; the number sealed now.

    Run it, and commit, before removing events older than ``cutoff``.
    """
    days = list(await conn.scalars(_UNSEALED, {"max_days": MAX_DAYS, "cutoff": cutoff}))
    return await _write(conn, _SEAL, days)
