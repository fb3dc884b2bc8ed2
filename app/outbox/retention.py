"""Retention (CONTRACT §3, §12): what the worker removes so storage stays bounded.

Removed, in batches of at most ``batch_size`` rows, each batch its own short transaction:
- events older than ``ANONID_EVENT_RETENTION_DAYS`` (the days they describe are sealed in
  ``daily_stats`` first, so stats keep them: ``app.lifecycle.rollup``);
- delivered outbox rows older than ``ANONID_OUTBOX_RETENTION_DAYS`` (by ``sent_at``), and rows
  given up on (``failed_at``) more than ``FAILED_OUTBOX_DAYS`` ago;
- link tokens ``LINK_TOKEN_GRACE`` after they were used or expired, whichever came first: until
  then a click on a spent or expired link still answers "used" or "expired", not "unknown";
- provider sign-in requests (``oauth_flows``) once expired (a redeemed one is already gone);
- WebAuthn challenges (``webauthn_challenges``) once expired (a used one is already gone);
- spent ALTCHA challenges (``spent_challenges``) once their challenge has expired: an expired
  solution is refused before the table is asked (``app.hooks.challenge``).
- sessions ``SESSION_GRACE`` after they ended, and sessions left unrefreshed for longer than any
  idle lifetime (``max(ANONID_ANONYMOUS_TTL_DAYS, ANONID_SESSION_TTL_DAYS)``) plus that grace:
  whatever kind they are, they can no longer be alive (``app.sessions.alive``). A registered
  session past its absolute lifetime but not yet idle that long waits at most the idle lifetime.

Any number of processes may run it at once: rows are taken with ``FOR UPDATE SKIP LOCKED`` and
every delete re-checks its guard, so two runs never remove a row twice or one that is not due.
No session state is used (no advisory lock, no ``SET``), so it works through a transaction pooler.
Each kind is walked through an index (events by ``(type, created_at)``, one type at a time, so
``events`` needs no index of its own for this), never by scanning a table.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.lifecycle.rollup import seal_days_before
from app.settings import Settings

log = logging.getLogger("anonid.retention")

FAILED_OUTBOX_DAYS = 30
LINK_TOKEN_GRACE = timedelta(days=7)
SESSION_GRACE = timedelta(days=1)
MAX_BATCH_SIZE = 10_000

_CUTOFFS = sa.text(
    """
SELECT now() - make_interval(days => :event_days) AS events,
       now() - make_interval(days => :outbox_days) AS delivered,
       now() - make_interval(days => :failed_days) AS failed,
       now() - CAST(:token_grace AS interval) AS tokens,
       now() - CAST(:session_grace AS interval) AS sessions_ended,
       ((now() - make_interval(days => :idle_days) - CAST(:session_grace AS interval))
           AT TIME ZONE 'UTC')::date AS sessions_idle
"""
)

# Every event type present, by a loose walk of the (type, created_at) index: one probe per type.
_EVENT_TYPES = sa.text(
    """
WITH RECURSIVE t AS (
    (SELECT type FROM events ORDER BY type LIMIT 1)
    UNION ALL
    SELECT (SELECT e.type FROM events e WHERE e.type > t.type ORDER BY e.type LIMIT 1)
    FROM t WHERE t.type IS NOT NULL
)
SELECT type FROM t WHERE type IS NOT NULL
"""
)


def _batch(table: str, guard: str, order: str) -> sa.TextClause:
    # The inner SELECT walks the index in ``order`` and locks what it takes, skipping rows another
    # run holds; the DELETE finds them by ctid and re-checks the guard on the version it removes.
    return sa.text(
        f"""
DELETE FROM {table}
WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {table} WHERE {guard} ORDER BY {order} LIMIT :n FOR UPDATE SKIP LOCKED
))
  AND {guard}
"""
    )


_EVENTS = _batch("events", "type = :type AND created_at < :cutoff", "type, created_at")
_DELIVERED = _batch("outbox", "sent_at < :cutoff", "sent_at")
_FAILED = _batch("outbox", "failed_at < :cutoff", "failed_at")
_TOKENS = _batch(
    "link_tokens", "coalesce(used_at, expires_at) < :cutoff", "coalesce(used_at, expires_at)"
)
_FLOWS = _batch("oauth_flows", "expires_at < now()", "expires_at")
_WEBAUTHN_CHALLENGES = _batch("webauthn_challenges", "expires_at < now()", "expires_at")
_CHALLENGES = _batch("spent_challenges", "expires_at < now()", "expires_at")
_SESSIONS_ENDED = _batch("sessions", "ended_at < :cutoff", "ended_at")
# By the UTC day of the last refresh (indexed; last_used_at is not, see migration 0009): a day's
# rounding is within the grace.
_SESSIONS_IDLE = _batch("sessions", "last_used_day < :cutoff", "last_used_day")


async def _drain(
    engine: AsyncEngine, statement: sa.TextClause, params: dict[str, object], batch_size: int
) -> int:
    """Run ``statement`` batch after batch, each in its own transaction, until one falls short."""
    removed = 0
    while True:
        async with engine.begin() as conn:
            count = (await conn.execute(statement, {**params, "n": batch_size})).rowcount
        removed += count
        # SKIP LOCKED rows do not count towards LIMIT: a short batch means nothing is left.
        if count < batch_size:
            return removed


async def remove_expired(
    engine: AsyncEngine, settings: Settings, *, batch_size: int = 1000
) -> dict[str, int]:
    """Remove every row past its retention now; the rows removed per kind
    (``events``, ``outbox_delivered``, ``outbox_failed``, ``link_tokens``, ``oauth_flows``,
    ``webauthn_challenges``, ``sessions``, ``challenges``)."""
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")
    async with engine.begin() as conn:
        cutoffs = (
            await conn.execute(
                _CUTOFFS,
                {
                    "event_days": settings.event_retention_days,
                    "outbox_days": settings.outbox_retention_days,
                    "failed_days": FAILED_OUTBOX_DAYS,
                    "token_grace": LINK_TOKEN_GRACE,
                    "session_grace": SESSION_GRACE,
                    "idle_days": max(settings.anonymous_ttl_days, settings.session_ttl_days),
                },
            )
        ).one()
    events_cutoff: datetime = cutoffs.events
    async with engine.begin() as conn:
        # Committed before any event goes: a day's figures are final before it loses a row.
        await seal_days_before(conn, events_cutoff)
        types = list(await conn.scalars(_EVENT_TYPES))
    removed = {
        "events": 0,
        "outbox_delivered": 0,
        "outbox_failed": 0,
        "link_tokens": 0,
        "oauth_flows": 0,
        "webauthn_challenges": 0,
        "sessions": 0,
        "challenges": 0,
    }
    for event_type in types:
        removed["events"] += await _drain(
            engine, _EVENTS, {"type": event_type, "cutoff": events_cutoff}, batch_size
        )
    removed["outbox_delivered"] = await _drain(
        engine, _DELIVERED, {"cutoff": cutoffs.delivered}, batch_size
    )
    removed["outbox_failed"] = await _drain(engine, _FAILED, {"cutoff": cutoffs.failed}, batch_size)
    removed["link_tokens"] = await _drain(engine, _TOKENS, {"cutoff": cutoffs.tokens}, batch_size)
    removed["oauth_flows"] = await _drain(engine, _FLOWS, {}, batch_size)
    removed["webauthn_challenges"] = await _drain(engine, _WEBAUTHN_CHALLENGES, {}, batch_size)
    removed["challenges"] = await _drain(engine, _CHALLENGES, {}, batch_size)
    removed["sessions"] = await _drain(
        engine, _SESSIONS_ENDED, {"cutoff": cutoffs.sessions_ended}, batch_size
    ) + await _drain(engine, _SESSIONS_IDLE, {"cutoff": cutoffs.sessions_idle}, batch_size)
    if any(removed.values()):
        log.info("retention removed %s", ", ".join(f"{v} {k}" for k, v in removed.items()))
    return removed
