"""Stored passkeys (CONTRACT §5, §6, §14): add one (a guest becomes registered in place), sign in
with one (merging a guest), and the account's own list, rename and remove.

Every change is a guarded statement in the caller's one transaction:

    change     guard
    add        the account locked at the session's version; the credential id is new
    promote    a guest adding its first passkey: ``promote_guest`` (method ``passkey``)
    use        the stored signature count is below the new one (or both are 0: authenticators
               without a counter), so a cloned authenticator, or two uses of one count, lose
    remove     the account locked; it keeps a verified address, an identity or another passkey

The database holds to the last rule too (``ck_passkeys_registered_can_sign_in``, migration 0013).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from app.credentials.passkeys import PASSKEY_REFUSED, NewPasskey
from app.errors import N_, AnonidError
from app.hooks.client import Hooks
from app.lifecycle.conversion import merge_guest
from app.lifecycle.events import record_event
from app.lifecycle.promotion import promote_guest
from app.lifecycle.users import USER_COLUMNS
from app.platform.ids import new_id
from app.settings import Settings

DEFAULT_NAME = "Passkey"
MAX_NAME = 100

_LOCK_ACCOUNT = sa.text(
    f"SELECT {USER_COLUMNS} FROM users WHERE id = :id AND session_version = :sv FOR UPDATE"
)
_ACCOUNT = sa.text(f"SELECT {USER_COLUMNS} FROM users WHERE id = :id")
_CREDENTIAL_IDS = sa.text(
    "SELECT credential_id FROM passkeys WHERE user_id = :id ORDER BY created_at"
)
_INSERT = sa.text(
    """
INSERT INTO passkeys (id, user_id, credential_id, public_key, sign_count, name, aaguid, backed_up)
VALUES (:id, :user_id, :credential_id, :public_key, :sign_count, :name, :aaguid, :backed_up)
ON CONFLICT (credential_id) DO NOTHING
RETURNING id
"""
)
_FIND = sa.text(
    "SELECT id, user_id, public_key, sign_count FROM passkeys WHERE credential_id = :credential_id"
)
_USE = sa.text(
    """
UPDATE passkeys SET sign_count = :count, last_used_at = now()
WHERE id = :id AND (sign_count < :count OR (sign_count = 0 AND :count = 0))
RETURNING user_id
"""
)
_REGISTERED = sa.text(f"SELECT {USER_COLUMNS} FROM users WHERE id = :id AND NOT is_anonymous")

_VIEW_COLUMNS = "p.id, p.name, p.created_at, p.last_used_at"
_LIST = sa.text(
    f"""
SELECT {_VIEW_COLUMNS}
FROM users u LEFT JOIN passkeys p ON p.user_id = u.id
WHERE u.id = :id AND u.session_version = :sv
ORDER BY p.created_at, p.id
"""
)
_RENAME = sa.text(
    f"""
UPDATE passkeys p SET name = :name
FROM users u
WHERE p.id = :passkey AND p.user_id = u.id AND u.id = :id AND u.session_version = :sv
RETURNING {_VIEW_COLUMNS}
"""
)
# The account keeps a way to sign in: its verified address, an identity or another passkey.
# Run with the account locked, so two removals cannot both count the other's as the one left.
_REMOVE = sa.text(
    """
DELETE FROM passkeys
WHERE id = :passkey AND user_id = :id
  AND (:has_email
       OR EXISTS (SELECT 1 FROM passkeys o WHERE o.user_id = :id AND o.id <> :passkey)
       OR EXISTS (SELECT 1 FROM identities i WHERE i.user_id = :id))
RETURNING id
"""
)
_OWNED = sa.text("SELECT 1 FROM passkeys WHERE id = :passkey AND user_id = :id")


@dataclass(frozen=True, slots=True)
class StoredPasskey:
    id: UUID
    user_id: UUID
    public_key: bytes
    sign_count: int


def clean_name(name: str | None) -> str:
    """A passkey's name as stored: trimmed, 1 to ``MAX_NAME`` printable characters."""
    if name is None:
        return DEFAULT_NAME
    cleaned = " ".join(name.split())
    if not cleaned or len(cleaned) > MAX_NAME or not cleaned.isprintable():
        raise AnonidError(
            "invalid_request",
            N_("A passkey's name is 1 to %(max)d printable characters."),
            params={"max": MAX_NAME},
        )
    return cleaned


def passkey_view(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "name": row.name,
        "created_at": row.created_at.isoformat(),
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
    }


async def session_account(conn: AsyncConnection, user_id: UUID, session_version: int) -> Row[Any]:
    """The session's account (``invalid_session`` when it is gone or moved on)."""
    row = (await conn.execute(_ACCOUNT, {"id": user_id})).first()
    if row is None or row.session_version != session_version:
        raise AnonidError("invalid_session")
    return row


async def credential_ids(conn: AsyncConnection, user_id: UUID) -> list[bytes]:
    """The credential ids of the account's passkeys (excluded when it adds another)."""
    return [bytes(c) for c in await conn.scalars(_CREDENTIAL_IDS, {"id": user_id})]


async def add_passkey(
    conn: AsyncConnection,
    settings: Settings,
    user_id: UUID,
    session_version: int,
    passkey: NewPasskey,
    name: str,
    *,
    email: str | None = None,
) -> Row[Any]:
    """Store the verified passkey for the session's account; a guest becomes registered in place
    (with ``email``, a verified address, when given). The account as it is now."""
    account = (await conn.execute(_LOCK_ACCOUNT, {"id": user_id, "sv": session_version})).first()
    if account is None:
        raise AnonidError("invalid_session")
    passkey_id = new_id()
    inserted = await conn.execute(
        _INSERT,
        {
            "id": passkey_id,
            "user_id": user_id,
            "credential_id": passkey.credential_id,
            "public_key": passkey.public_key,
            "sign_count": passkey.sign_count,
            "name": name,
            "aaguid": passkey.aaguid,
            "backed_up": passkey.backed_up,
        },
    )
    if inserted.first() is None:
        raise AnonidError("invalid_passkey", N_("This passkey is already registered."))
    if account.is_anonymous:
        promoted = await promote_guest(
            conn, settings, user_id, session_version, email=email, method="passkey"
        )
        if promoted is None:  # locked above: cannot happen, but never half-do it
            raise AnonidError("invalid_session")
        account = promoted
    else:  # read again: its ``methods`` now name the passkey
        account = (await conn.execute(_ACCOUNT, {"id": user_id})).one()
    await record_event(
        conn,
        "user.passkey_added",
        user_id,
        {"id": str(user_id), "passkey": str(passkey_id)},
        settings.webhook_url_list,
    )
    return account


async def find_passkey(conn: AsyncConnection, credential_id: bytes) -> StoredPasskey | None:
    row = (await conn.execute(_FIND, {"credential_id": credential_id})).first()
    if row is None:
        return None
    return StoredPasskey(row.id, row.user_id, bytes(row.public_key), row.sign_count)


async def sign_in_with_passkey(
    conn: AsyncConnection,
    settings: Settings,
    passkey: StoredPasskey,
    new_count: int,
    guest: tuple[UUID, int] | None,
    hooks: Hooks | None = None,
) -> tuple[Row[Any], UUID | None]:
    """Record the use (refused when another use got there first with the same or a higher
    count), then fold in the guest of ``(id, session_version)``, if any (asking the
    ``before_merge`` hook of ``hooks``): the account and the guest's id when it was merged."""
    used = (await conn.execute(_USE, {"id": passkey.id, "count": new_count})).first()
    if used is None:
        raise AnonidError("invalid_credentials", PASSKEY_REFUSED)
    account = (await conn.execute(_REGISTERED, {"id": used.user_id})).one()
    if guest is None or not settings.merge_on_login:
        return account, None
    merged = await merge_guest(conn, settings, guest[0], guest[1], account.id, hooks)
    if merged is None:
        return account, None
    return merged, guest[0]


async def list_passkeys(
    conn: AsyncConnection, user_id: UUID, session_version: int
) -> list[dict[str, Any]]:
    """The session's account's passkeys, oldest first (``invalid_session`` when it moved on)."""
    rows = (await conn.execute(_LIST, {"id": user_id, "sv": session_version})).all()
    if not rows:
        raise AnonidError("invalid_session")
    return [passkey_view(row) for row in rows if row.id is not None]


async def rename_passkey(
    conn: AsyncConnection, user_id: UUID, session_version: int, passkey_id: UUID, name: str
) -> dict[str, Any]:
    params = {"passkey": passkey_id, "id": user_id, "sv": session_version, "name": name}
    row = (await conn.execute(_RENAME, params)).first()
    if row is not None:
        return passkey_view(row)
    await session_account(conn, user_id, session_version)  # raises invalid_session
    raise AnonidError("not_found")


async def remove_passkey(
    conn: AsyncConnection, user_id: UUID, session_version: int, passkey_id: UUID
) -> None:
    """Remove one passkey of the session's account; ``not_found`` when it is not one of its
    passkeys, ``last_credential`` when the account would keep no way to sign in."""
    account = (await conn.execute(_LOCK_ACCOUNT, {"id": user_id, "sv": session_version})).first()
    if account is None:
        raise AnonidError("invalid_session")
    params = {"passkey": passkey_id, "id": user_id, "has_email": account.email is not None}
    if (await conn.execute(_REMOVE, params)).first() is not None:
        return
    if (await conn.execute(_OWNED, params)).first() is None:
        raise AnonidError("not_found")
    raise AnonidError("last_credential")
