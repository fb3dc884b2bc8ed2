"""The user object (``U`` in CONTRACT §5) and the one-row reads every authenticated path shares."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import AnonidError

USER_COLUMNS = (
    "id, username, email, is_anonymous, data, session_version, pending_email, pending_until, "
    "created_at, updated_at, converted_at"
)

_GET = sa.text(f"SELECT {USER_COLUMNS} FROM users WHERE id = :id")


def state_of(row: Row[Any]) -> str:
    if not row.is_anonymous:
        return "registered"
    if row.pending_email is not None and row.pending_until is not None:
        if row.pending_until > datetime.now(UTC):
            return "pending"
    return "anonymous"


def user_view(row: Row[Any]) -> dict[str, Any]:
    """The public user object; never hashes, tokens or internal counters."""
    state = state_of(row)
    return {
        "id": str(row.id),
        "state": state,
        "is_anonymous": row.is_anonymous,
        "username": row.username,
        "email": row.email,
        "pending_email": row.pending_email if state == "pending" else None,
        "email_verified": row.email is not None,
        "data": row.data,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


async def get_session_user(conn: AsyncConnection, user_id: UUID, session_version: int) -> Row[Any]:
    """The user behind a session, or ``invalid_session`` if it is gone or its version moved on."""
    row = (await conn.execute(_GET, {"id": user_id})).first()
    if row is None or row.session_version != session_version:
        raise AnonidError("invalid_session")
    return row


async def get_user(conn: AsyncConnection, user_id: UUID) -> Row[Any] | None:
    return (await conn.execute(_GET, {"id": user_id})).first()
