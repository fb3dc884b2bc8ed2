"""The user object (``U`` in CONTRACT §5) and the one-row reads every authenticated path shares."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import AnonidError
from app.platform.pgpool import Db, Statement, fetchrow, row_mapping
from app.sessions.alive import alive, lifetime_params
from app.settings import Settings

USER_FIELDS = (
    "id",
    "username",
    "email",
    "is_anonymous",
    "data",
    "session_version",
    "pending_email",
    "pending_until",
    "created_at",
    "updated_at",
    "converted_at",
)


def user_columns(table: str | None = None) -> str:
    """The select list of a user row, qualified by ``table`` when given: its fields and
    ``methods``, the ways a registered account can sign in (CONTRACT §5), computed in the same
    statement (``anonid_sign_in_methods``, migration 0012). A guest has none, and never pays for
    the function: the hot paths of guests stay as cheap as before."""
    t = f"{table}." if table else ""
    methods = (
        f"CASE WHEN {t}is_anonymous THEN ARRAY[]::text[] ELSE anonid_sign_in_methods("
        f"{t}id, {t}password_hash IS NOT NULL, {t}email IS NOT NULL) END AS methods"
    )
    return ", ".join([*(t + f for f in USER_FIELDS), methods])


USER_COLUMNS = user_columns()

_GET = Statement(f"SELECT {USER_COLUMNS} FROM users WHERE id = :id")

# The user behind an access token, in one statement: it exists, its session version is the
# token's, and the token's session is alive (app.sessions.alive).
SESSION_ALIVE = f"""EXISTS (
    SELECT FROM sessions s
    WHERE s.user_id = u.id AND s.id = :sid AND {alive("s", "u")}
)"""
_SESSION_USER = Statement(
    f"SELECT {USER_COLUMNS} FROM users u WHERE u.id = :id AND u.session_version = :sv"
    f" AND {SESSION_ALIVE}"
)


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
        "methods": list(user["methods"]),
    }


def session_params(
    settings: Settings, user_id: UUID, session_version: int, sid: UUID
) -> dict[str, Any]:
    """The parameters of ``SESSION_ALIVE`` and of the ``id``/``sv`` guard beside it."""
    return {"id": user_id, "sv": session_version, "sid": sid, **lifetime_params(settings)}


async def get_session_user(
    db: Db, settings: Settings, user_id: UUID, session_version: int, sid: UUID
) -> Any:
    """The user behind an access token, or ``invalid_session`` if the user is gone, its session
    version moved on or the session is no longer alive (one statement)."""
    params = session_params(settings, user_id, session_version, sid)
    row = await fetchrow(db, _SESSION_USER, params)
    if row is None:
        raise AnonidError("invalid_session")
    return row


_LEGACY_USER = Statement(
    f"SELECT {USER_COLUMNS} FROM users WHERE id = :id AND session_version = :sv"
)


async def legacy_user(db: Db, user_id: UUID, session_version: int) -> Any:
    """The user a version-1 session token names, if it exists at that session version."""
    return await fetchrow(db, _LEGACY_USER, {"id": user_id, "sv": session_version})


async def get_user(conn: AsyncConnection, user_id: UUID) -> Row[Any] | None:
    return (await conn.execute(_GET.clause, {"id": user_id})).first()
