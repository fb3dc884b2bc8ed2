"""Privacy: export every stored fact about an account, and erase it.

Erasure policy for events (the one table that may mention a user without a foreign key):
the account's past events stay, so stats of past days stay right, but they are anonymised in the
same transaction: ``user_id`` becomes NULL and the payload ``{}`` (a merge event naming the account
as either side counts as the account's). The ``user.deleted`` event itself is stored the same way;
only its webhook deliveries (``outbox`` rows with ``user_id`` NULL) carry ``{"id": …}``, because an
integrating app needs the id to erase its own copy. Link tokens and every email of the account go
with the row (``ON DELETE CASCADE``), and so do its sessions, provider identities and passkeys.
After an erase no row in ``users``, ``link_tokens``, ``sessions``, ``identities``, ``passkeys``,
``outbox.user_id`` or ``events`` refers to the account.

Conversion requests are exported as ``pending_email`` and its expiry (and the
``user.conversion_started`` events) only. Whether a request made a setup link and a
``conversion_setup`` email depends on whether the address already had an account, so listing
them would answer the question ``POST /v1/me/conversion`` refuses to answer (CONTRACT §5): setup
links and conversion emails are left out of every export, pending or past. Address changes
likewise (``POST /v1/me/email`` makes a link and an ``email_change`` email only for a free
address): their links and emails are left out, and the change shows once it is done.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.lifecycle.events import record_event
from app.lifecycle.users import USER_COLUMNS, user_view

_USER = sa.text(
    f"SELECT {USER_COLUMNS}, password_hash IS NOT NULL AS has_password FROM users WHERE id = :id"
)

# Events that are the account's: its own, and a merge naming it as guest or account.
_MINE = (
    "(user_id = :id OR (type = 'user.merged' AND :sid IN (payload ->> 'from', payload ->> 'into')))"
)

_EVENTS = sa.text(
    f"SELECT id, type, payload, created_at FROM events WHERE {_MINE} ORDER BY created_at, id"
)

# Metadata only: never token_hash or code_hash. Never setup or address-change links (see the
# module docstring).
_LINKS = sa.text(
    "SELECT purpose, email, created_at, expires_at, used_at FROM link_tokens "
    "WHERE user_id = :id AND purpose NOT IN ('setup', 'email_change') ORDER BY created_at"
)

# Metadata only: never the bodies, which carry link tokens and codes. Never conversion or
# address-change emails (see the module docstring).
_EMAILS = sa.text(
    """
SELECT id, payload ->> 'email_kind' AS email_kind, payload ->> 'to' AS "to",
    payload ->> 'subject' AS subject, attempts, created_at, sent_at, failed_at
FROM outbox WHERE user_id = :id AND kind = 'email'
    AND payload ->> 'email_kind' NOT IN ('conversion_setup', 'email_change')
ORDER BY id
"""
)

_IDENTITIES = sa.text(
    "SELECT provider, subject, email, email_verified, created_at, last_sign_in_at "
    "FROM identities WHERE user_id = :id ORDER BY created_at, id"
)

# The facts about each passkey, not the credential itself (its id and public key).
_PASSKEYS = sa.text(
    "SELECT id, name, aaguid, backed_up, sign_count, created_at, last_used_at "
    "FROM passkeys WHERE user_id = :id ORDER BY created_at, id"
)

# Metadata only: never a refresh-token or family hash.
_SESSIONS = sa.text(
    "SELECT id, created_at, last_used_at, user_agent, ended_at, ended_reason FROM sessions "
    "WHERE user_id = :id ORDER BY created_at, id"
)

_DELETE = sa.text("DELETE FROM users WHERE id = :id RETURNING id")
_DELETE_SESSION = sa.text("DELETE FROM users WHERE id = :id AND session_version = :sv RETURNING id")
_ANONYMISE_EVENTS = sa.text(f"UPDATE events SET user_id = NULL, payload = '{{}}' WHERE {_MINE}")
_SCRUB_EVENT = sa.text("UPDATE events SET payload = '{}' WHERE id = :id")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def export_user(conn: AsyncConnection, user_id: UUID) -> dict[str, Any] | None:
    """Every stored fact about the account, without hashes, token values or email bodies."""
    row = (await conn.execute(_USER, {"id": user_id})).first()
    if row is None:
        return None
    params = {"id": user_id, "sid": str(user_id)}
    user = user_view(row)
    user.update(
        pending_email=row.pending_email,
        pending_until=_iso(row.pending_until),
        converted_at=_iso(row.converted_at),
        session_version=row.session_version,
        has_password=row.has_password,
    )
    pending = None
    if row.pending_email is not None and row.pending_until is not None:
        if row.pending_until > datetime.now(UTC):
            pending = {"email": row.pending_email, "expires_at": _iso(row.pending_until)}
    links = [
        {
            "purpose": link.purpose,
            "email": link.email,
            "created_at": _iso(link.created_at),
            "expires_at": _iso(link.expires_at),
            "used_at": _iso(link.used_at),
        }
        for link in await conn.execute(_LINKS, params)
    ]
    emails = [
        {
            "id": mail.id,
            "email_kind": mail.email_kind,
            "to": mail.to,
            "subject": mail.subject,
            "attempts": mail.attempts,
            "created_at": _iso(mail.created_at),
            "sent_at": _iso(mail.sent_at),
            "failed_at": _iso(mail.failed_at),
        }
        for mail in await conn.execute(_EMAILS, params)
    ]
    identities = [
        {
            "provider": identity.provider,
            "subject": identity.subject,
            "email": identity.email,
            "email_verified": identity.email_verified,
            "created_at": _iso(identity.created_at),
            "last_sign_in_at": _iso(identity.last_sign_in_at),
        }
        for identity in await conn.execute(_IDENTITIES, params)
    ]
    passkeys = [
        {
            "id": str(passkey.id),
            "name": passkey.name,
            "aaguid": passkey.aaguid,
            "backed_up": passkey.backed_up,
            "sign_count": passkey.sign_count,
            "created_at": _iso(passkey.created_at),
            "last_used_at": _iso(passkey.last_used_at),
        }
        for passkey in await conn.execute(_PASSKEYS, params)
    ]
    events = [
        {
            "id": str(event.id),
            "type": event.type,
            "payload": event.payload,
            "created_at": _iso(event.created_at),
        }
        for event in await conn.execute(_EVENTS, params)
    ]
    sessions = [
        {
            "id": str(session.id),
            "created_at": _iso(session.created_at),
            "last_used_at": _iso(session.last_used_at),
            "user_agent": session.user_agent,
            "ended_at": _iso(session.ended_at),
            "ended_reason": session.ended_reason,
        }
        for session in await conn.execute(_SESSIONS, params)
    ]
    return {
        "exported_at": datetime.now(UTC).isoformat(),
        "user": user,
        "pending_conversion": pending,
        "links": links,
        "identities": identities,
        "passkeys": passkeys,
        "emails": emails,
        "events": events,
        "sessions": sessions,
    }


async def erase_user(
    conn: AsyncConnection,
    user_id: UUID,
    webhook_urls: list[str],
    *,
    session_version: int | None = None,
) -> bool:
    """Delete the account, its links and mail, anonymise its events, record ``user.deleted``.

    With ``session_version`` the delete only happens while that session is current. Returns
    whether an account was deleted; the caller's transaction makes all of it one change.
    """
    if session_version is None:
        deleted = await conn.scalar(_DELETE, {"id": user_id})
    else:
        deleted = await conn.scalar(_DELETE_SESSION, {"id": user_id, "sv": session_version})
    if deleted is None:
        return False
    await conn.execute(_ANONYMISE_EVENTS, {"id": user_id, "sid": str(user_id)})
    # The webhook rows are built from the payload as inserted; the stored event is then scrubbed.
    event_id = await record_event(conn, "user.deleted", None, {"id": str(user_id)}, webhook_urls)
    await conn.execute(_SCRUB_EVENT, {"id": event_id})
    return True
