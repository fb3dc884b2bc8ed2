"""Reading accounts for operators (the admin API and the console), at any size of ``users``.

Guarantees (CONTRACT §12): each read is served by an index and costs the same at 20 million
accounts as at a thousand. Accounts are listed in keyset pages on the time-ordered id, so new
accounts sort last and a deletion never shifts a page boundary; one account's events are read
newest first through ``ix_events_user_id``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import AnonidError
from app.lifecycle.addresses import email_key
from app.lifecycle.users import USER_COLUMNS

State = Literal["anonymous", "pending", "registered"]
STATES: tuple[State, ...] = ("anonymous", "pending", "registered")

# State rules match ``users.state_of``; pending = an unexpired conversion request. Each filter is
# served by an index (CONTRACT §12): the keyset walk of the primary key (or of the anonymous ids'
# partial index: the oldest ids are mostly registered), the partial indexes on updated_at
# (anonymous, registered) and on pending_until, the unique index on email.
_STATE_FILTERS = {
    "registered": "NOT is_anonymous",
    "pending": "is_anonymous AND pending_email IS NOT NULL AND pending_until > now()",
    "anonymous": "is_anonymous AND NOT (pending_email IS NOT NULL AND pending_until > now())",
}

_EVENTS = sa.text(
    "SELECT id, type, payload, created_at FROM events WHERE user_id = :id"
    " ORDER BY created_at DESC, id DESC LIMIT :limit"
)


def encode_cursor(user_id: UUID) -> str:
    return base64.urlsafe_b64encode(user_id.bytes).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> UUID:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return UUID(bytes=raw)
    except (ValueError, binascii.Error):
        raise AnonidError("invalid_request", "cursor: not a cursor from this API") from None


def list_statement(state: str | None, inactive: bool, email: bool, after: bool) -> sa.TextClause:
    where = []
    if state is not None:
        where.append(_STATE_FILTERS[state])
    if inactive:
        stale = "updated_at < now() - make_interval(days => :inactive_days)"
        # Spelled per kind of account when no state narrows it, so the planner can walk the two
        # partial indexes on updated_at (users has none on updated_at alone).
        where.append(
            stale if state else f"((is_anonymous AND {stale}) OR (NOT is_anonymous AND {stale}))"
        )
    if email:
        where.append("email = :email")
    if after:
        where.append("id > :after")
    clause = " AND ".join(where) or "true"
    # The page's ids are chosen first, so a filter's index that carries the id (INCLUDE) answers
    # without visiting the rows it does not return; then only the page's rows are read.
    return sa.text(
        f"WITH page AS MATERIALIZED (SELECT id FROM users WHERE {clause} ORDER BY id LIMIT :limit)"
        f" SELECT {USER_COLUMNS} FROM users WHERE id IN (SELECT id FROM page) ORDER BY id"
    )


@dataclass(frozen=True)
class UserPage:
    rows: list[Row[Any]]
    next_cursor: str | None


async def list_users(
    conn: AsyncConnection,
    *,
    state: State | None = None,
    inactive_days: int | None = None,
    email: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> UserPage:
    """One page of accounts matching every filter given (``email``: exact, case-insensitive);
    ``next_cursor`` continues after it, ``None`` on the last page."""
    after = decode_cursor(cursor) if cursor else None
    params: dict[str, Any] = {"limit": limit + 1}
    if inactive_days is not None:
        params["inactive_days"] = inactive_days
    if email is not None:
        params["email"] = email_key(email)  # the stored normal form: exact, case-insensitive
    if after is not None:
        params["after"] = after
    statement = list_statement(state, inactive_days is not None, email is not None, bool(after))
    rows = list(await conn.execute(statement, params))
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return UserPage(rows[:limit], next_cursor)


async def user_events(conn: AsyncConnection, user_id: UUID, limit: int = 50) -> list[Row[Any]]:
    """The account's latest ``limit`` events, newest first."""
    return list(await conn.execute(_EVENTS, {"id": user_id, "limit": limit}))
