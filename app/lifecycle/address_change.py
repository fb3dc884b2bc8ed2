"""Changing a registered account's address (CONTRACT §5): ask for it, then prove the new one.

    transition  from                      to                   guard
    request     registered                (code and link sent  NOT is_anonymous AND
                                          to the new address)  session_version = :sv
    change      registered, a valid code  registered, the new  NOT is_anonymous (and, by code,
                or link for the address   address              session_version = :sv); the code or
                                                               link consumed in the same tx; the
                                                               unique index on email

- Asking again ends the earlier requests' codes and links, whatever the new address is.
- An address that is taken (by another account, or the account's own) gets no code and no email,
  and the answer is the same, at the same cost (``email_codes.send_nothing``).
- The change does not bump the session version (CONTRACT §4): every session goes on. Every other
  link and code of the account ends (reset links and sign-in codes went to the old address),
  ``user.email_changed`` is recorded and the old address, if any, is told (``email_changed``).
- If another account verified the address meanwhile: ``email_taken`` and the caller's
  transaction rolls back, leaving the account as it was.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from app.credentials.email_codes import send_code, send_nothing
from app.credentials.links import LinkTarget, end_link_tokens
from app.errors import AnonidError
from app.lifecycle.addresses import EMAIL_UNIQUE_INDEX
from app.lifecycle.events import record_event
from app.lifecycle.users import USER_COLUMNS
from app.outbox.enqueue import enqueue_email
from app.settings import Settings

_ACCOUNT = sa.text(
    "SELECT id, email, is_anonymous FROM users WHERE id = :id AND session_version = :sv"
)
_TAKEN = sa.text("SELECT 1 FROM users WHERE email = :email")
_OLD = sa.text(
    "SELECT email FROM users WHERE id = :id AND NOT is_anonymous"
    " AND (CAST(:sv AS integer) IS NULL OR session_version = :sv) FOR UPDATE"
)
_CHANGE = sa.text(
    f"UPDATE users SET email = :email, updated_at = now() WHERE id = :id AND NOT is_anonymous"
    f" RETURNING {USER_COLUMNS}"
)


async def request_email_change(
    conn: AsyncConnection,
    settings: Settings,
    key: bytes,
    user_id: UUID,
    session_version: int,
    email: str,
) -> None:
    """Send an ``email_change`` email (link and code) to ``email`` (a normal form) if no account
    has it; the caller's answer is the same either way."""
    account = (await conn.execute(_ACCOUNT, {"id": user_id, "sv": session_version})).first()
    if account is None:
        raise AnonidError("invalid_session")
    if account.is_anonymous:
        raise AnonidError("forbidden", "Only a registered account can do that.")
    await end_link_tokens(conn, user_id, "email_change")
    if (await conn.execute(_TAKEN, {"email": email})).first() is not None:
        await send_nothing(conn, settings, key, "email_change", email)
        return
    await send_code(conn, settings, key, "email_change", user_id, email)


async def change_email(
    conn: AsyncConnection,
    settings: Settings,
    target: LinkTarget,
    session_version: int | None = None,
) -> Row[Any]:
    """Give the account the address its used code or link proved (``session_version``: the
    session that typed the code must still be current)."""
    params = {"id": target.user_id, "sv": session_version}
    old = (await conn.execute(_OLD, params)).first()
    if old is None:  # the account is gone, or the session that asked moved on
        raise AnonidError("invalid_code")
    try:
        row = (await conn.execute(_CHANGE, {"id": target.user_id, "email": target.email})).one()
    except sqlalchemy.exc.IntegrityError as exc:
        if EMAIL_UNIQUE_INDEX in str(exc.orig):
            raise AnonidError("email_taken") from None
        raise
    await end_link_tokens(conn, target.user_id)
    await record_event(
        conn,
        "user.email_changed",
        target.user_id,
        {"id": str(target.user_id)},
        settings.webhook_url_list,
    )
    if old.email is not None and old.email != target.email:
        await enqueue_email(
            conn,
            settings,
            kind="email_changed",
            to=old.email,
            user_id=target.user_id,
            context={
                "new_email": target.email,
                "login_url": f"{settings.public_url}/account/login",
            },
        )
    return row
