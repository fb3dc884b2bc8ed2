"""Accounts per state and this month's active accounts, recounted by the worker on an interval.

Counting 20 million accounts costs seconds, so requests (``GET /v1/admin/stats``, ``GET /metrics``)
read the one row of ``stats_counts`` instead, which the worker rewrites every
``REFRESH_SECONDS``. CONTRACT §5 allows these figures to lag writes by up to 60 seconds: a row
older than ``STALE_SECONDS`` (no worker running) is not trusted, and the request counts itself
(at full cost, as before there was a worker to do it).

Definitions (the same rule as ``users.state_of``): ``pending`` is an anonymous account with an
unexpired conversion request; ``anonymous`` the other anonymous accounts. The month's active
accounts (MAU) are those touched (``updated_at``, which every write path sets, creation included)
since the start of the current UTC month. Each count walks a partial index, never the table.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

# A recount walks the partial indexes of users: about 1.5 s of one core at 20 million accounts,
# so every 30 s costs some 5 % of a core; a row is then at most ~32 s old.
REFRESH_SECONDS = 30.0
# Older than this, the row is not trusted (no worker is recounting). With the metrics' own
# 10 s cache on top, a figure served is never more than the contract's 60 s old.
STALE_SECONDS = 45.0
MAX_LAG_SECONDS = 60

_COUNT = """
WITH bounds AS (
    SELECT date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS month_start
)
SELECT
    (SELECT count(*) FROM users WHERE is_anonymous) AS anonymous_all,
    (SELECT count(*) FROM users
     WHERE is_anonymous AND pending_email IS NOT NULL AND pending_until > now()) AS pending,
    (SELECT count(*) FROM users WHERE NOT is_anonymous) AS registered,
    to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM') AS mau_month,
    (SELECT count(*) FROM users
     WHERE is_anonymous AND updated_at >= (SELECT month_start FROM bounds)) AS mau_anonymous,
    (SELECT count(*) FROM users
     WHERE NOT is_anonymous AND updated_at >= (SELECT month_start FROM bounds)) AS mau_registered
"""

_REFRESH = sa.text(
    f"""
WITH c AS ({_COUNT})
INSERT INTO stats_counts (id, anonymous, pending, registered, mau_month, mau_anonymous,
                          mau_registered, refreshed_at)
SELECT 1, anonymous_all - pending, pending, registered, mau_month, mau_anonymous,
       mau_registered, now()
FROM c
ON CONFLICT (id) DO UPDATE SET
    anonymous = excluded.anonymous,
    pending = excluded.pending,
    registered = excluded.registered,
    mau_month = excluded.mau_month,
    mau_anonymous = excluded.mau_anonymous,
    mau_registered = excluded.mau_registered,
    refreshed_at = excluded.refreshed_at
"""
)

# The stored row if it is fresh enough (and of this month); else nothing, and the caller counts.
# Two statements, not one with the count as a never-taken branch: PostgreSQL plans (and, its cost
# estimate being that of counting the whole table, JIT-compiles) a branch it will not run, which
# cost 110 ms per read at 20 million accounts (bench/RESULTS.md, "Scale").
_READ = sa.text(
    """
SELECT anonymous, pending, registered, mau_month, mau_anonymous, mau_registered
FROM stats_counts
WHERE id = 1 AND refreshed_at > now() - make_interval(secs => :stale)
  AND mau_month = to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM')
"""
)
_COUNT_NOW = sa.text(
    f"""
SELECT anonymous_all - pending AS anonymous, pending, registered, mau_month, mau_anonymous,
       mau_registered
FROM ({_COUNT}) AS c
"""
)


# One core, not a burst of parallel workers that would take both from live requests.
_SERIAL = sa.text("SET LOCAL max_parallel_workers_per_gather = 0")


# Several processes run the worker (serve --workers N, anonid worker): one recount per interval
# is enough. The transaction-level lock (released at commit, so it works through a transaction
# pooler) keeps two from recounting at the same moment; the freshness test skips a recount
# another process made less than half an interval ago.
COUNTS_LOCK = 0x616E6F6E_0107
_DUE = sa.text(
    """
SELECT pg_try_advisory_xact_lock(:key)
       AND NOT EXISTS (SELECT FROM stats_counts
                       WHERE id = 1 AND refreshed_at > now() - make_interval(secs => :fresh))
"""
)


async def refresh_if_due(conn: AsyncConnection) -> bool:
    """Recount unless another process is recounting or just did; whether this one did."""
    due = await conn.scalar(_DUE, {"key": COUNTS_LOCK, "fresh": REFRESH_SECONDS / 2})
    if due:
        await refresh_counts(conn)
    return bool(due)


async def refresh_counts(conn: AsyncConnection) -> None:
    """Recount and store, in the caller's transaction (the worker's job; commit afterwards)."""
    await conn.execute(_SERIAL)
    await conn.execute(_REFRESH)


async def read_counts(conn: AsyncConnection) -> dict[str, Any]:
    """``{"anonymous", "pending", "registered", "mau_month", "mau_anonymous", "mau_registered"}``,
    at most ``STALE_SECONDS`` old."""
    row = (await conn.execute(_READ, {"stale": STALE_SECONDS})).one_or_none()
    if row is None:
        row = (await conn.execute(_COUNT_NOW)).one()
    return dict(row._mapping)
