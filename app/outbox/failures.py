"""Deliveries given up on (``failed_at``): listing them for an operator and trying one again.

Guarantees:
- listing walks the partial index ``ix_outbox_failed_at`` newest first, in keyset pages, so it
  costs the same however large the outbox is (failed rows themselves are bounded by retention);
- a retry makes the row due at once, in the caller's transaction, and wakes the workers when that
  transaction commits. It is one more attempt, not a new retry window: if it fails, the row is
  given up on again with its new error (``claim.schedule_retry``), ready for another retry;
- a row that was delivered or is no longer failed is left alone (the retry reports ``False``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import AnonidError

_COLUMNS = (
    "id, kind, user_id, locale, attempts, last_error, created_at, failed_at,"
    " payload ->> 'email_kind' AS email_kind, payload ->> 'to' AS recipient,"
    " payload ->> 'url' AS url"
)

_FIRST = sa.text(
    f"SELECT {_COLUMNS} FROM outbox WHERE failed_at IS NOT NULL"
    " ORDER BY failed_at DESC, id DESC LIMIT :limit"
)
_AFTER = sa.text(
    f"SELECT {_COLUMNS} FROM outbox WHERE failed_at IS NOT NULL"
    " AND (failed_at, id) < (:failed_at, :id)"
    " ORDER BY failed_at DESC, id DESC LIMIT :limit"
)

_RETRY = sa.text(
    """
UPDATE outbox SET failed_at = NULL, next_attempt_at = now(), claimed_until = NULL
WHERE id = :id AND failed_at IS NOT NULL AND sent_at IS NULL
RETURNING id
"""
)
# The INSERT trigger wakes workers for new rows; a row made due again needs its own call.
_WAKE = sa.text("SELECT pg_notify('anonid_outbox', '')")


@dataclass(frozen=True)
class FailedPage:
    rows: list[Row[Any]]
    next_cursor: str | None


def _cursor(row: Row[Any]) -> str:
    return f"{row.failed_at.isoformat()}_{row.id}"


def _parse_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        at, _, row_id = cursor.rpartition("_")
        return datetime.fromisoformat(at), int(row_id)
    except ValueError:
        raise AnonidError("invalid_request", "cursor: not a cursor from this page") from None


async def failed_deliveries(
    conn: AsyncConnection, cursor: str | None = None, limit: int = 50
) -> FailedPage:
    """A page of given-up deliveries, the most recently failed first."""
    params: dict[str, Any] = {"limit": limit + 1}
    if cursor:
        params["failed_at"], params["id"] = _parse_cursor(cursor)
    rows = list(await conn.execute(_AFTER if cursor else _FIRST, params))
    next_cursor = _cursor(rows[limit - 1]) if len(rows) > limit else None
    return FailedPage(rows[:limit], next_cursor)


async def retry_delivery(conn: AsyncConnection, row_id: int) -> bool:
    """Make a given-up row due now; ``False`` if it is not a failed, undelivered row."""
    if await conn.scalar(_RETRY, {"id": row_id}) is None:
        return False
    await conn.execute(_WAKE)
    return True
