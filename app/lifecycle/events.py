"""Events: an append-only record written in the same statement or transaction as each change.

When webhooks are configured, the same statement also queues one outbox row per endpoint, so an
event and its deliveries exist together or not at all.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.platform.ids import new_id

EVENT_TYPES = (
    "user.anonymous_created",
    "user.conversion_started",
    "user.converted",
    "user.merged",
    "user.culled",
    "user.deleted",
    "user.password_reset",
    "user.email_changed",
    "user.identity_linked",
    "user.passkey_added",
    "user.refresh_reused",
)

# Where an event row comes from by default: bound parameters :event_id, :event_type, :event_user
# and :event_payload. A caller may give a query producing the same five columns instead.
EVENT_VALUES = "VALUES (:event_id, :event_type, :event_user, CAST(:event_payload AS jsonb), now())"


def event_cte(source: str = EVENT_VALUES, *, hooks: bool = True) -> str:
    """A CTE fragment (``ev``) inserting the event row(s) from ``source``; with ``hooks``, also
    ``hooks``, queuing one webhook delivery per URL in :webhook_urls for each event."""
    cte = f"""
ev AS (
    INSERT INTO events (id, type, user_id, payload, created_at)
    {source}
    RETURNING id, type, payload, created_at
)"""
    if not hooks:
        return cte
    return (
        cte
        + """,
hooks AS (
    INSERT INTO outbox (kind, payload)
    SELECT 'webhook', jsonb_build_object(
        'url', url, 'webhook_id', ev.id::text,
        'body', jsonb_build_object('type', ev.type, 'timestamp', ev.created_at, 'data', ev.payload))
    FROM ev, unnest(CAST(:webhook_urls AS text[])) AS url
)
"""
    )


def event_params(
    event_type: str, user_id: UUID | None, payload: dict[str, Any], webhook_urls: list[str]
) -> dict[str, Any]:
    assert event_type in EVENT_TYPES, event_type
    return {
        "event_id": new_id(),
        "event_type": event_type,
        "event_user": user_id,
        "event_payload": orjson.dumps(payload).decode(),
        "webhook_urls": webhook_urls,
    }


_RECORD = sa.text(f"WITH {event_cte()} SELECT id FROM ev")


async def record_event(
    conn: AsyncConnection,
    event_type: str,
    user_id: UUID | None,
    payload: dict[str, Any],
    webhook_urls: list[str],
) -> UUID:
    """Store one event (and queue its webhooks) in the caller's transaction."""
    params = event_params(event_type, user_id, payload, webhook_urls)
    await conn.execute(_RECORD, params)
    return params["event_id"]  # type: ignore[no-any-return]
