"""The user object (``U`` in CONTRACT §5) and the one-row reads every authenticated path shares."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import AnonidError
from app.platform.pgpool import Db, Statement, fetchrow, row_mapping

USER_COLUMNS = (
    "id, username, email, is_anonymous, data, session_version, pending_email, pending_until, "
    "created_at, updated_at, converted_at"
)

_GET = Statement(f"SELECT {USER_COLUMNS} FROM users WHERE id = :id")


def state_of(row: Any) -> str:
    """``registered``, ``pending`` or ``anonymous``, for a user row (SQLAlchemy or asyncpg)."""
    user = row_mapping(row)
    if not user["is_anonymous"]:
        return "registered"
    pending_until = user["pending_until"]
    if user["pending_email"] is not None and pending_until is not None:
        if pending_until > datetime.now(UTC):
            return "pending"
    return "anonymous"


def user_view(row: Any) -> dict[str, Any]:
    """The public user object; never hashes, tokens or internal counters."""
    user = row_mapping(row)
    state = state_of(user)
    return {
        "id": str(user["id"]),
        "state": state,
        "is_anonymous": user["is_anonymous"],
        "username": user["username"],
        "email": user["email"],
        "pending_email": user["pending_email"] if state == "pending" else None,
        "email_verified": user["email"] is not None,
        "data": user["data"],
        "created_at": user["created_at"].isoformat(),
        "updated_at": user["updated_at"].isoformat(),
    }


async def get_session_user(db: Db, user_id: UUID, session_version: int) -> Any:
    """The user behind a session, or ``invalid_session`` if it is gone or its version moved on."""
    row = await fetchrow(db, _GET, {"id": user_id})
    if row is None or row_mapping(row)["session_version"] != session_version:
        raise AnonidError("invalid_session")
    return row


async def get_user(conn: AsyncConnection, user_id: UUID) -> Row[Any] | None:
    return (await conn.execute(_GET.clause, {"id": user_id})).first()
