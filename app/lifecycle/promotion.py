"""Registered accounts made without a password: a guest promoted in place by a credential that
proves who they are (a provider identity), or a new registered account.

    transition  from                  to          guard in the WHERE clause
    promote     anonymous | pending   registered  is_anonymous AND session_version = :sv
    create      (none)                registered  a new id

Both leave ``password_hash`` NULL; ``email`` is a verified address or NULL (an account without
an address keeps its identity: the constraint trigger of migration 0011). A promotion keeps the
id and the data, bumps the session version, ends the guest's setup links and records
``user.converted`` with its method. The address may have been verified by another account since
the caller looked: the unique index then refuses it and the caller's transaction rolls back.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from app.credentials.links import end_link_tokens
from app.lifecycle.events import record_event
from app.lifecycle.users import USER_COLUMNS
from app.platform.ids import new_id
from app.settings import Settings

_PROMOTE = sa.text(
    f"""
UPDATE users
SET is_anonymous = false, email = :email, username = NULL, converted_at = now(),
    session_version = session_version + 1, pending_email = NULL, pending_until = NULL,
    updated_at = now()
WHERE id = :id AND session_version = :sv AND is_anonymous
RETURNING {USER_COLUMNS}
"""
)

_CREATE = sa.text(
    f"""
INSERT INTO users (id, username, email, is_anonymous, data)
VALUES (:id, NULL, :email, false, '{{}}')
RETURNING {USER_COLUMNS}
"""
)


async def promote_guest(
    conn: AsyncConnection,
    settings: Settings,
    user_id: UUID,
    session_version: int,
    *,
    email: str | None,
    method: str,
) -> Row[Any] | None:
    """Register the guest in place (same id, same data); ``None`` when it is no longer the
    guest of that session version."""
    params = {"id": user_id, "sv": session_version, "email": email}
    row = (await conn.execute(_PROMOTE, params)).first()
    if row is None:
        return None
    await end_link_tokens(conn, user_id)
    await record_event(
        conn,
        "user.converted",
        user_id,
        {"id": str(user_id), "method": method},
        settings.webhook_url_list,
    )
    return row


async def create_registered(conn: AsyncConnection, email: str | None) -> Row[Any]:
    """A new registered account with empty data; its credential is the caller's to add."""
    return (await conn.execute(_CREATE, {"id": new_id(), "email": email})).one()
