"""Claiming outbox rows and recording the outcome of each delivery attempt.

Guarantees:
- a claim is one autocommit statement (``FOR UPDATE SKIP LOCKED``) that sets a lease
  (``claimed_until``), so concurrent workers never hold the same row and no transaction stays
  open while a worker talks to SMTP or a webhook receiver;
- a worker that dies mid-delivery loses nothing: its lease expires and the row is due again;
- a row marked sent is never claimed again; outcomes are recorded only by the lease holder, so a
  worker whose lease ran out cannot reschedule a row another worker now owns;
- failed attempts are retried with exponential backoff and jitter until the retry window (at least
  24 hours from the row's creation) has passed, then the row is marked ``failed_at`` for good.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True)
class RetryPolicy:
    """How long a claim lasts and how failed deliveries are spaced out and given up on."""

    lease: timedelta = timedelta(minutes=5)
    first_delay: timedelta = timedelta(seconds=10)
    max_delay: timedelta = timedelta(hours=1)
    # CONTRACT §7: retry for at least 24 hours. A shorter window exists only for tests.
    window: timedelta = timedelta(hours=24)

    def delay(self, attempts: int) -> timedelta:
        """Backoff before attempt ``attempts + 1``: doubling, capped, with jitter in [50%, 100%]."""
        exponent = min(max(attempts - 1, 0), 40)
        base: timedelta = min(self.first_delay * (2**exponent), self.max_delay)
        return base * (0.5 + random.random() / 2)  # noqa: S311 (jitter, not a secret)


@dataclass(frozen=True)
class Claimed:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int  # including this one
    lease: datetime  # our claimed_until; proves we still hold the row


_CLAIM = sa.text(
    """
WITH due AS (
    SELECT id FROM outbox
    WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now()
      AND (claimed_until IS NULL OR claimed_until < now())
      AND kind = ANY(CAST(:kinds AS text[]))
    ORDER BY next_attempt_at, id
    LIMIT :n
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox AS o
SET claimed_until = now() + CAST(:lease AS interval), attempts = o.attempts + 1
FROM due WHERE o.id = due.id
RETURNING o.id, o.kind, o.payload, o.attempts, o.claimed_until
"""
)

# Rendered email bodies contain link tokens; once delivered they have no reason to stay.
_SENT = sa.text(
    """
UPDATE outbox
SET sent_at = now(), claimed_until = NULL, last_error = NULL,
    payload = CASE WHEN kind = 'email' THEN payload - 'text' - 'html' ELSE payload END
WHERE id = ANY(CAST(:ids AS bigint[])) AND sent_at IS NULL
"""
)

# Give up only once the window has passed, so every row is retried for at least that long.
_RETRY = sa.text(
    """
UPDATE outbox
SET claimed_until = NULL, last_error = :error,
    next_attempt_at = now() + CAST(:delay AS interval),
    failed_at = CASE WHEN now() >= created_at + CAST(:window AS interval) THEN now() END
WHERE id = :id AND sent_at IS NULL AND claimed_until = :lease
RETURNING failed_at IS NOT NULL AS gave_up
"""
)

# Handing back an unfinished claim: due again at once, and the attempt did not count.
_RELEASE = sa.text(
    """
UPDATE outbox
SET claimed_until = NULL, attempts = greatest(attempts - 1, 0)
WHERE id = :id AND sent_at IS NULL AND claimed_until = :lease
"""
)

# When the next row becomes claimable: due time, or the end of someone else's lease.
_NEXT_DUE = sa.text(
    """
SELECT extract(epoch FROM min(greatest(next_attempt_at, coalesce(claimed_until, next_attempt_at)))
               - now())
FROM outbox
WHERE sent_at IS NULL AND failed_at IS NULL AND kind = ANY(CAST(:kinds AS text[]))
"""
)


async def claim_due(
    conn: AsyncConnection, policy: RetryPolicy, kinds: list[str], limit: int = 20
) -> list[Claimed]:
    """Lease up to ``limit`` due rows of ``kinds``; ``conn`` must be in autocommit mode."""
    result = await conn.execute(_CLAIM, {"kinds": kinds, "n": limit, "lease": policy.lease})
    return [Claimed(r.id, r.kind, r.payload, r.attempts, r.claimed_until) for r in result]


async def mark_sent(conn: AsyncConnection, rows: Sequence[Claimed]) -> None:
    """Record acknowledged deliveries (one statement); these rows are never delivered again."""
    await conn.execute(_SENT, {"ids": [row.id for row in rows]})


async def schedule_retry(
    conn: AsyncConnection, row: Claimed, policy: RetryPolicy, error: str
) -> bool:
    """Record a failed attempt and schedule the next one; True when the row was given up on."""
    result = await conn.execute(
        _RETRY,
        {
            "id": row.id,
            "lease": row.lease,
            "error": error[:1000],
            "delay": policy.delay(row.attempts),
            "window": policy.window,
        },
    )
    return bool(result.scalar())


async def release(conn: AsyncConnection, rows: list[Claimed]) -> None:
    """Hand back claims this worker will not finish (it is stopping)."""
    for row in rows:
        await conn.execute(_RELEASE, {"id": row.id, "lease": row.lease})


async def seconds_until_due(conn: AsyncConnection, kinds: list[str]) -> float | None:
    """Seconds until the next row of ``kinds`` can be claimed (<= 0: now); None when none wait."""
    value = await conn.scalar(_NEXT_DUE, {"kinds": kinds})
    return None if value is None else float(value)
