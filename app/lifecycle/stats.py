"""Operator statistics (``GET /v1/admin/stats``, ``anonid stats``), from the users table and events.

Definitions (all dates and months in UTC):
- ``users``: accounts now, by state; ``pending`` is an anonymous account with an unexpired
  conversion request (the same rule as ``users.state_of``).
- ``daily``: the last 30 days, today included, oldest first, zero-filled; counts of the events
  ``user.anonymous_created``, ``user.conversion_started``, ``user.converted``, ``user.merged`` that
  day, and ``culled`` = the number of ids in that day's ``user.culled`` events.
- ``conversion_rate_30d``: ``user.converted`` events divided by ``user.anonymous_created`` events
  over those same 30 days (0.0 when nobody arrived), rounded to 4 places. A funnel ratio of flows,
  not a cohort: an account created 40 days ago and converted today counts in the numerator.
- ``mau``: accounts that exist now and were created or touched (``updated_at``) in the current
  calendar month, split by ``is_anonymous``.
- ``outbox``: rows not yet delivered and not given up on (``pending``), and given up (``failed``).
Erased accounts keep their anonymised events, so past days do not change when a user is erased.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

DAYS = 30

_DAILY = sa.text(
    """
WITH days AS (
    SELECT d::date AS day
    FROM generate_series(
        (now() AT TIME ZONE 'UTC')::date - (:days - 1),
        (now() AT TIME ZONE 'UTC')::date,
        interval '1 day'
    ) AS d
), counted AS (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS day,
        count(*) FILTER (WHERE type = 'user.anonymous_created') AS anonymous_created,
        count(*) FILTER (WHERE type = 'user.conversion_started') AS conversions_started,
        count(*) FILTER (WHERE type = 'user.converted') AS converted,
        count(*) FILTER (WHERE type = 'user.merged') AS merged,
        coalesce(sum(jsonb_array_length(payload -> 'ids'))
                 FILTER (WHERE type = 'user.culled'
                         AND jsonb_typeof(payload -> 'ids') = 'array'), 0) AS culled
    FROM events
    WHERE created_at >= ((now() AT TIME ZONE 'UTC')::date - (:days - 1)) AT TIME ZONE 'UTC'
      AND type IN ('user.anonymous_created', 'user.conversion_started', 'user.converted',
                   'user.merged', 'user.culled')
    GROUP BY 1
)
SELECT to_char(days.day, 'YYYY-MM-DD') AS date,
    coalesce(c.anonymous_created, 0) AS anonymous_created,
    coalesce(c.conversions_started, 0) AS conversions_started,
    coalesce(c.converted, 0) AS converted,
    coalesce(c.merged, 0) AS merged,
    coalesce(c.culled, 0) AS culled
FROM days LEFT JOIN counted c ON c.day = days.day
ORDER BY days.day
"""
)

_USERS = sa.text(
    """
WITH bounds AS (
    SELECT date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS month_start
)
SELECT
    to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM') AS month,
    count(*) FILTER (WHERE NOT is_anonymous) AS registered,
    count(*) FILTER (WHERE is_anonymous AND pending_email IS NOT NULL
                     AND pending_until > now()) AS pending,
    count(*) FILTER (WHERE is_anonymous) AS anonymous_all,
    count(*) FILTER (WHERE is_anonymous
                     AND greatest(created_at, updated_at) >= (SELECT month_start FROM bounds))
        AS mau_anonymous,
    count(*) FILTER (WHERE NOT is_anonymous
                     AND greatest(created_at, updated_at) >= (SELECT month_start FROM bounds))
        AS mau_registered
FROM users
"""
)

_OUTBOX = sa.text(
    """
SELECT
    count(*) FILTER (WHERE sent_at IS NULL AND failed_at IS NULL) AS pending,
    count(*) FILTER (WHERE failed_at IS NOT NULL) AS failed
FROM outbox
"""
)


async def collect_stats(conn: AsyncConnection) -> dict[str, Any]:
    """The stats object of CONTRACT §5; run it in one transaction for a consistent picture."""
    daily = [dict(row._mapping) for row in await conn.execute(_DAILY, {"days": DAYS})]
    for day in daily:
        for key in ("anonymous_created", "conversions_started", "converted", "merged", "culled"):
            day[key] = int(day[key])
    users = (await conn.execute(_USERS)).one()
    outbox = (await conn.execute(_OUTBOX)).one()
    created = sum(day["anonymous_created"] for day in daily)
    converted = sum(day["converted"] for day in daily)
    return {
        "users": {
            "anonymous": users.anonymous_all - users.pending,
            "pending": users.pending,
            "registered": users.registered,
        },
        "daily": daily,
        "conversion_rate_30d": round(converted / created, 4) if created else 0.0,
        "mau": {
            "month": users.month,
            "anonymous": users.mau_anonymous,
            "registered": users.mau_registered,
        },
        "outbox": {"pending": outbox.pending, "failed": outbox.failed},
    }
