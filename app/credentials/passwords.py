"""Credentials of registered accounts: login, password change, reset, and ending every session.

Every change of password bumps ``session_version``, so all older tokens of the account stop
working; the caller then starts one fresh session (``app.sessions.store.start`` with
``end_others``, which ends every other session row in the same transaction). Password hashing happens before the guarded
``UPDATE``, so no row lock is held while argon2 runs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from app.credentials.links import (
    consume_link_token,
    end_link_tokens,
    issue_link_token,
)
from app.credentials.password_hashing import (
    burn_verify,
    check_policy,
    hash_password,
    needs_rehash,
    normalise,
    verify_password,
)
from app.errors import AnonidError
from app.lifecycle.addresses import email_key
from app.lifecycle.events import record_event
from app.lifecycle.users import USER_COLUMNS
from app.outbox.enqueue import enqueue_email
from app.sessions.store import end_all_sessions
from app.settings import Settings

_ACCOUNT_BY_EMAIL = sa.text(
    f"SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = :email AND NOT is_anonymous"
)
_ACCOUNT_BY_ID = sa.text(f"SELECT {USER_COLUMNS}, password_hash FROM users WHERE id = :id")

# Login checks the password with no connection held, then confirms in its transaction that the
# hash it verified is still the account's: a concurrent password change wins. A rehash only
# replaces the hash it verified.
_STILL_VERIFIED = sa.text(
    f"SELECT {USER_COLUMNS} FROM users WHERE id = :id AND NOT is_anonymous AND password_hash = :old"
)
_REHASH = sa.text(
    f"""
UPDATE users SET password_hash = :new
WHERE id = :id AND NOT is_anonymous AND password_hash = :old
RETURNING {USER_COLUMNS}
"""
)

_CHANGE = sa.text(
    f"""
UPDATE users
SET password_hash = :new, session_version = session_version + 1, updated_at = now()
WHERE id = :id AND session_version = :sv AND NOT is_anonymous
  AND password_hash IS NOT DISTINCT FROM :old
RETURNING {USER_COLUMNS}
"""
)

_RESET = sa.text(
    f"""
UPDATE users
SET password_hash = :new, session_version = session_version + 1, updated_at = now()
WHERE id = :id AND NOT is_anonymous AND email = :email
RETURNING {USER_COLUMNS}
"""
)

_LOGOUT_ALL = sa.text(
    """
UPDATE users SET session_version = session_version + 1
WHERE id = :id AND session_version = :sv AND NOT is_anonymous
RETURNING id
"""
)


async def find_account(conn: AsyncConnection, email: str) -> Row[Any] | None:
    """The registered account for ``email`` with its password hash, ``None`` if there is none."""
    return await _account_by_email(conn, email)


async def check_login(account: Row[Any] | None, password: str) -> str | None:
    """Check ``password`` against the account read by ``find_account``; needs no connection, so
    none is held while argon2 runs. Returns a fresh hash when today's parameters are stronger
    than the stored hash's, else ``None``; raises ``invalid_credentials``.

    An unknown address still costs one argon2 verification, so timing does not reveal accounts.
    """
    if account is None or account.password_hash is None:
        await burn_verify(password)
        raise AnonidError("invalid_credentials")
    if not await verify_password(account.password_hash, password):
        raise AnonidError("invalid_credentials")
    if needs_rehash(account.password_hash):
        return await hash_password(normalise(password))
    return None


async def confirm_login(conn: AsyncConnection, account: Row[Any], rehash: str | None) -> Row[Any]:
    """The account as it is now, provided its password hash is still the one ``check_login``
    verified (a password changed meanwhile is ``invalid_credentials``); stores ``rehash``."""
    params = {"id": account.id, "old": account.password_hash, "new": rehash}
    row = (await conn.execute(_REHASH if rehash else _STILL_VERIFIED, params)).first()
    if row is None:
        raise AnonidError("invalid_credentials")
    return row


async def _account_by_email(conn: AsyncConnection, email: str) -> Row[Any] | None:
    # Stored addresses are normal forms and compared with "=": the same key as the rate limit's.
    key = email_key(email)
    # PostgreSQL text cannot hold NUL, so no stored address has one (and the driver refuses it).
    if "\x00" in key:
        return None
    return (await conn.execute(_ACCOUNT_BY_EMAIL, {"email": key})).first()


async def _registered(conn: AsyncConnection, user_id: UUID, session_version: int) -> Row[Any]:
    row = (await conn.execute(_ACCOUNT_BY_ID, {"id": user_id})).first()
    if row is None or row.session_version != session_version:
        raise AnonidError("invalid_session")
    if row.is_anonymous:
        raise AnonidError("forbidden", "Only a registered account can do that.")
    return row


async def registered_account(
    conn: AsyncConnection, user_id: UUID, session_version: int
) -> Row[Any]:
    """The session's registered account with its password hash (``invalid_session`` or
    ``forbidden`` otherwise)."""
    return await _registered(conn, user_id, session_version)


async def check_password_change(
    settings: Settings, account: Row[Any], current_password: str | None, new_password: str
) -> str:
    """The hash of the new password, once the policy accepts it and the current password
    matches the account read by ``registered_account``; an account without a password (made by
    an email code or link, a provider or a passkey) sets one with no current password. Needs no
    connection, so none is held while argon2 runs."""
    normal = check_policy(new_password, settings.password_min_length)
    if account.password_hash is not None and (
        current_password is None
        or not await verify_password(account.password_hash, current_password)
    ):
        raise AnonidError("invalid_credentials", "The current password is not correct.")
    return await hash_password(normal)


async def change_password(
    conn: AsyncConnection, settings: Settings, account: Row[Any], new_hash: str
) -> Row[Any]:
    """Store ``new_hash`` if the account is still as ``registered_account`` read it (same
    session version, same password hash or none); every other session ends."""
    params = {
        "id": account.id,
        "sv": account.session_version,
        "old": account.password_hash,
        "new": new_hash,
    }
    changed = (await conn.execute(_CHANGE, params)).first()
    if changed is None:  # a concurrent change or logout-all moved the account on
        raise AnonidError("invalid_session")
    await end_link_tokens(conn, account.id, "reset")
    await _notify_changed(conn, settings, changed)
    return changed


async def logout_everywhere(conn: AsyncConnection, user_id: UUID, session_version: int) -> None:
    """End every session of a registered account, this one included: the session version moves
    on (older access tokens are refused at once) and every session row ends (no refresh token
    of the account works any more)."""
    if (await conn.execute(_LOGOUT_ALL, {"id": user_id, "sv": session_version})).first() is None:
        await _registered(conn, user_id, session_version)  # raises the reason
        raise AnonidError("invalid_session")
    await end_all_sessions(conn, user_id, "logout_all")


async def request_password_reset(conn: AsyncConnection, settings: Settings, email: str) -> None:
    """Queue a reset link if ``email`` belongs to a registered account; silent otherwise."""
    row = await _account_by_email(conn, email)
    if row is None:
        return
    ttl = timedelta(minutes=settings.reset_token_ttl_minutes)
    token = await issue_link_token(conn, row.id, "reset", row.email, ttl)
    await enqueue_email(
        conn,
        settings,
        kind="password_reset",
        to=row.email,
        user_id=row.id,
        context={
            "link": settings.link(settings.reset_url, token),
            "ttl_minutes": settings.reset_token_ttl_minutes,
        },
    )


async def confirm_password_reset(
    conn: AsyncConnection, settings: Settings, token: str, password_hash: str
) -> Row[Any]:
    """Set the password whose hash ``new_password_hash`` made through a reset link; the link is
    used once and every session ends."""
    target = await consume_link_token(conn, token, "reset")
    params = {"id": target.user_id, "email": target.email, "new": password_hash}
    row = (await conn.execute(_RESET, params)).first()
    if row is None:  # the account changed its address since the link was sent
        raise AnonidError("invalid_token")
    await end_link_tokens(conn, target.user_id, "reset")
    await record_event(
        conn,
        "user.password_reset",
        target.user_id,
        {"id": str(target.user_id)},
        settings.webhook_url_list,
    )
    await _notify_changed(conn, settings, row)
    return row


async def _notify_changed(conn: AsyncConnection, settings: Settings, row: Row[Any]) -> None:
    if row.email is None:  # an account without an address (a provider's or a passkey's)
        return
    await enqueue_email(
        conn,
        settings,
        kind="password_changed",
        to=row.email,
        user_id=row.id,
        context={"reset_request_url": f"{settings.public_url}/account/reset"},
    )
