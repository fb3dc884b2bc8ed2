"""One-time link tokens (password setup and reset): issue, peek, consume exactly once, end.

A token is 256 bits from ``secrets``; only its SHA-256 is stored, bound to one purpose and one
address. Consuming is a single guarded ``UPDATE … RETURNING``, so PostgreSQL decides which of
several concurrent clicks wins. Unknown, used, ended or wrong-purpose tokens are ``invalid_token``;
only a token that would otherwise be good but is past its expiry is ``token_expired``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import AnonidError

Purpose = Literal["setup", "reset"]

# token_urlsafe(32) is 43 characters; anything much longer is not ours and is refused unhashed.
MAX_TOKEN_LENGTH = 128

_ISSUE = sa.text(
    """
INSERT INTO link_tokens (token_hash, user_id, purpose, email, created_at, expires_at)
VALUES (:hash, :user_id, :purpose, :email, now(), now() + CAST(:ttl AS interval))
"""
)

_CONSUME = sa.text(
    """
UPDATE link_tokens SET used_at = now()
WHERE token_hash = :hash AND purpose = :purpose AND used_at IS NULL AND expires_at > now()
RETURNING user_id, email
"""
)

_STATUS = sa.text(
    "SELECT user_id, email, used_at IS NULL AS open, expires_at > now() AS fresh"
    " FROM link_tokens WHERE token_hash = :hash AND purpose = :purpose"
)

_END_FOR_USER = sa.text(
    """
UPDATE link_tokens SET used_at = now()
WHERE user_id = :user_id AND used_at IS NULL
  AND (CAST(:purpose AS text) IS NULL OR purpose = :purpose)
  AND (CAST(:keep_email AS text) IS NULL OR email <> :keep_email)
"""
)


@dataclass(frozen=True, slots=True)
class LinkTarget:
    user_id: UUID
    email: str


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


async def issue_link_token(
    conn: AsyncConnection, user_id: UUID, purpose: Purpose, email: str, ttl: timedelta
) -> str:
    """A new token for ``purpose``; the caller puts it in a link, the database keeps its hash."""
    token = secrets.token_urlsafe(32)
    await conn.execute(
        _ISSUE,
        {
            "hash": hash_token(token),
            "user_id": user_id,
            "purpose": purpose,
            "email": email,
            "ttl": ttl,
        },
    )
    return token


def _hash_or_refuse(token: str) -> bytes:
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise AnonidError("invalid_token")
    return hash_token(token)


async def peek_link_token(conn: AsyncConnection, token: str, purpose: Purpose) -> LinkTarget:
    """Whether the token would redeem now (without using it): for early, friendly refusals."""
    row = (
        await conn.execute(_STATUS, {"hash": _hash_or_refuse(token), "purpose": purpose})
    ).first()
    if row is None or not row.open:
        raise AnonidError("invalid_token")
    if not row.fresh:
        raise AnonidError("token_expired")
    return LinkTarget(row.user_id, row.email)


async def consume_link_token(conn: AsyncConnection, token: str, purpose: Purpose) -> LinkTarget:
    """Use the token; exactly one of any number of concurrent callers gets its target."""
    token_hash = _hash_or_refuse(token)
    row = (await conn.execute(_CONSUME, {"hash": token_hash, "purpose": purpose})).first()
    if row is not None:
        return LinkTarget(row.user_id, row.email)
    # Lost: say why (used and unknown look alike; only a still-open but stale token is "expired").
    status = (await conn.execute(_STATUS, {"hash": token_hash, "purpose": purpose})).first()
    if status is not None and status.open and not status.fresh:
        raise AnonidError("token_expired")
    raise AnonidError("invalid_token")


async def end_link_tokens(
    conn: AsyncConnection,
    user_id: UUID,
    purpose: Purpose | None = None,
    *,
    except_email: str | None = None,
) -> None:
    """Make the user's open tokens (of one purpose, optionally sparing one address) stop working."""
    await conn.execute(
        _END_FOR_USER, {"user_id": user_id, "purpose": purpose, "keep_email": except_email}
    )
