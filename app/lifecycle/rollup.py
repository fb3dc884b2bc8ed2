"""The daily funnel kept in ``daily_stats``, so stats keep their days after retention and never
count more than a few minutes of events per request.

Each row holds one UTC day's figures for the events from the start of that day up to its
``rolled_until``; stats add the events after ``rolled_until`` (today's last minutes) from
``events`` through its index.

Guarantees:
- the worker rolls every reportable day forward to ``now() - CLOSE_GRACE`` (or the day's end),
  adding only the events of the range it has not rolled yet; a guarded UPDATE (``rolled_until``
  unchanged) makes each range count once even when several workers roll at the same time, and a
  run with nothing new changes nothing. The grace lets a transaction that stamped its events a
  little earlier commit before its range is rolled;
- only the worker writes ``daily_stats``: requests never touch it, so the hot paths gain no
  contended row;
- an event inserted with, or moved to, a time in a range already rolled up (an operator's fix, a
  test's aged rows) is counted into that row at once by the triggers of migration 0007 (moved
  out, it is taken out); the app's own events, stamped now(), never fire them (a ``WHEN`` clause
  with no measurable cost per insert). Only a transaction that commits more than the grace
  after stamping its events could be missed, until the day is sealed;
- before retention removes any event of a reportable day it *seals* that day, recomputing the whole
  day from its events, all still present; a sealed day then changes only through the triggers.
- days older than ``MAX_DAYS`` are never reported, so they are neither rolled up nor sealed.

The figures of a day are those of CONTRACT §5's ``daily``: counts of the events
``user.anonymous_created``, ``user.conversion_started``, ``user.converted`` and ``user.merged``,
and ``culled`` = the ids in that day's ``user.culled`` events. Each range is read through the
``(type, created_at)`` index of ``events``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

MAX_DAYS = 400
# The horizon when open transactions cannot all be seen (see above).
CLOSE_GRACE = timedelta(minutes=10)
# How often the worker rolls up (app.outbox.housekeeping): a stats request counts the events
# since, about 10 s of them (50,000 at 5,000 new guests a second: a few ms through the index).
ROLLUP_SECONDS = 10.0
FIGURES = ("anonymous_created", "conversions_started", "converted", "merged", "culled")

# The figures of the events in [t0, t1) for each (day, t0, t1) of the arrays :days, :t0s, :t1s:
# two index range scans per range (the four counted types, then the culled batches, whose payload
# is read).
RANGE_FIGURES = """
SELECT d.day, d.t0, d.t1,
       f.anonymous_created, f.conversions_started, f.converted, f.merged, c.culled
FROM unnest(CAST(:days AS date[]), CAST(:t0s AS timestamptz[]), CAST(:t1s AS timestamptz[]))
    AS d(day, t0, t1)
CROSS JOIN LATERAL (
    SELECT
        count(*) FILTER (WHERE e.type = 'user.anonymous_created') AS anonymous_created,
        count(*) FILTER (WHERE e.type = 'user.conversion_started') AS conversions_started,
        count(*) FILTER (WHERE e.type = 'user.converted') AS converted,
        count(*) FILTER (WHERE e.type = 'user.merged') AS merged
    FROM events e
    WHERE e.type IN ('user.anonymous_created', 'user.conversion_started', 'user.converted',
                     'user.merged')
      AND e.created_at >= d.t0 AND e.created_at < d.t1
) f
CROSS JOIN LATERAL (
    SELECT coalesce(sum(jsonb_array_length(e.payload -> 'ids'))
                    FILTER (WHERE jsonb_typeof(e.payload -> 'ids') = 'array'), 0) AS culled
    FROM events e
    WHERE e.type = 'user.culled' AND e.created_at >= d.t0 AND e.created_at < d.t1
) c
"""

_COLUMNS = ", ".join(FIGURES)

# The start of the oldest transaction open on this database but ours, or now(); a second earlier,
# for a transaction whose start time is taken but not yet published. A hidden session (state NULL
# for a role we may not watch) could be one, so then the grace. Only client backends stamp events.
_HORIZON = sa.text(
    """
SELECT CASE WHEN bool_or(a.state IS NULL) THEN now() - CAST(:grace AS interval)
            ELSE least(now(), min(a.xact_start)) - interval '1 second' END
FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.backend_type = 'client backend'
  AND a.pid <> pg_backend_pid()
"""
)

# Reportable days that can be rolled further: (day, from, to), from = where the row stopped (or
# the day's start), to = the day's end or the horizon, whichever is earlier. Sealed days are done.
_TO_ROLL = sa.text(
    """
WITH bounds AS (
    SELECT d::date AS day,
           d::date::timestamp AT TIME ZONE 'UTC' AS day_start,
           least((d::date + 1)::timestamp AT TIME ZONE 'UTC', CAST(:horizon AS timestamptz))
               AS upto
    FROM generate_series((now() AT TIME ZONE 'UTC')::date - (:max_days - 1),
                         (now() AT TIME ZONE 'UTC')::date, interval '1 day') AS d
)
SELECT b.day, coalesce(s.rolled_until, b.day_start) AS t0, b.upto AS t1, s.day IS NULL AS new
FROM bounds b LEFT JOIN daily_stats s ON s.day = b.day
WHERE b.upto > b.day_start
  AND (s.day IS NULL OR (NOT s.sealed AND s.rolled_until < b.upto))
ORDER BY b.day
"""
)

_INSERT = sa.text(
    f"""
INSERT INTO daily_stats (day, {_COLUMNS}, sealed, rolled_until, rolled_at)
SELECT day, {_COLUMNS}, false, t1, now() FROM ({RANGE_FIGURES}) AS figures
ON CONFLICT (day) DO NOTHING
"""
)

# Adds a range only if nobody rolled the row meanwhile (rolled_until still where we started).
_EXTEND = sa.text(
    f"""
UPDATE daily_stats s SET
    {", ".join(f"{name} = s.{name} + f.{name}" for name in FIGURES)},
    rolled_until = f.t1, rolled_at = now()
FROM ({RANGE_FIGURES}) AS f
WHERE s.day = f.day AND s.rolled_until = f.t0 AND NOT s.sealed
"""
)

# Reportable days that start before :cutoff (retention may remove some of their events) and are
# not sealed yet, with their bounds.
_UNSEALED = sa.text(
    """
SELECT d::date AS day,
       d::date::timestamp AT TIME ZONE 'UTC' AS t0,
       (d::date + 1)::timestamp AT TIME ZONE 'UTC' AS t1
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
INSERT INTO daily_stats (day, {_COLUMNS}, sealed, rolled_until, rolled_at)
SELECT day, {_COLUMNS}, true, t1, now() FROM ({RANGE_FIGURES}) AS figures
ON CONFLICT (day) DO UPDATE SET
    {", ".join(f"{name} = excluded.{name}" for name in FIGURES)},
    sealed = true, rolled_until = excluded.rolled_until, rolled_at = excluded.rolled_at
WHERE NOT daily_stats.sealed
"""
)

# Ranges per statement: a day of 125,000 events takes about 30 ms to count.
CHUNK = 31

Range = tuple[date, datetime, datetime]


async def _write(conn: AsyncConnection, statement: sa.TextClause, ranges: list[Range]) -> int:
    written = 0
    for start in range(0, len(ranges), CHUNK):
        days, t0s, t1s = zip(*ranges[start : start + CHUNK], strict=True)
        params = {"days": list(days), "t0s": list(t0s), "t1s": list(t1s)}
        written += (await conn.execute(statement, params)).rowcount
    return written


async def roll_up(conn: AsyncConnection) -> int:
    """Roll every reportable day forward to the horizon; the rows written.

    Run it first in its transaction (READ COMMITTED): the ranges are counted by later statements,
    whose snapshots see every transaction that was open when the horizon was read as committed
    or, if it is still open, start at or after the horizon."""
    horizon = await conn.scalar(_HORIZON, {"grace": CLOSE_GRACE})
    rows = list(await conn.execute(_TO_ROLL, {"max_days": MAX_DAYS, "horizon": horizon}))
    new = [(r.day, r.t0, r.t1) for r in rows if r.new]
    old = [(r.day, r.t0, r.t1) for r in rows if not r.new]
    return await _write(conn, _INSERT, new) + await _write(conn, _EXTEND, old)


async def seal_days_before(conn: AsyncConnection, cutoff: datetime) -> int:
    """Seal every reportable day that starts before ``cutoff``; the number sealed now.

    Run it, and commit, before removing events older than ``cutoff``.
    """
    rows = await conn.execute(_UNSEALED, {"max_days": MAX_DAYS, "cutoff": cutoff})
    return await _write(conn, _SEAL, [(r.day, r.t0, r.t1) for r in rows])


def live_ranges(window: list[date], rolled: dict[date, Any]) -> list[Range]:
    """The ranges of ``window`` that stats must count from events: each day after its row."""
    ranges = []
    for day in window:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        end = start + timedelta(days=1)
        row = rolled.get(day)
        begin = row.rolled_until if row is not None else start
        if begin < end:
            ranges.append((day, begin, end))
    return ranges
