"""One-time link tokens (password setup and reset, sign-in, address change): issue, peek, consume
exactly once, end.

A token is 256 bits from ``secrets``; only its SHA-256 is stored, bound to one purpose and one
address. The row may also hold the one-time code the same email carries
(``app.credentials.email_codes``): using the link or the code uses the row, so it ends both. Consuming is a single guarded ``UPDATE … RETURNING``, so PostgreSQL decides which of
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
from app.settings import Settings

Purpose = Literal["setup", "reset", "login", "email_change"]

# token_urlsafe(32) is 43 characters; anything much longer is not ours and is refused unhashed.
MAX_TOKEN_LENGTH = 128

_ISSUE = sa.text(
    """
INSERT INTO link_tokens (token_hash, user_id, purpose, email, created_at, expires_at, code_hash,
                         code_expires_at)
VALUES (:hash, :user_id, :purpose, :email, now(), now() + CAST(:ttl AS interval), :code_hash,
        CASE WHEN CAST(:code_hash AS bytea) IS NOT NULL
             THEN now() + least(CAST(:ttl AS interval), CAST(:code_ttl AS interval)) END)
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

_PURPOSE_OF = sa.text(
    "SELECT purpose, user_id, email, used_at IS NULL AS open, expires_at > now() AS fresh"
    " FROM link_tokens WHERE token_hash = :hash AND purpose = ANY(:purposes)"
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


def email_page_link(settings: Settings, token: str) -> str:
    """The link of a sign-in or address-change email: the hosted page whose button redeems it
    (``/account/email``; a link never acts on a ``GET``, mail scanners follow links)."""
    return f"{settings.public_url}/account/email?token={token}"


def new_token() -> str:
    return secrets.token_urlsafe(32)


async def issue_link_token(
    conn: AsyncConnection,
    user_id: UUID,
    purpose: Purpose,
    email: str,
    ttl: timedelta,
    *,
    token: str | None = None,
    code_hash: bytes | None = None,
    code_ttl: timedelta | None = None,
) -> str:
    """A new token for ``purpose`` (``token`` when given); the caller puts it in a link, the
    database keeps its hash, and ``code_hash`` of the code the same email carries, which lives
    ``code_ttl`` (never longer than the link)."""
    token = token or new_token()
    await conn.execute(
        _ISSUE,
        {
            "hash": hash_token(token),
            "user_id": user_id,
            "purpose": purpose,
            "email": email,
            "ttl": ttl,
            "code_hash": code_hash,
            "code_ttl": code_ttl,
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


async def peek_link_purpose(
    conn: AsyncConnection, token: str, purposes: tuple[Purpose, ...]
) -> tuple[Purpose, LinkTarget]:
    """Which of ``purposes`` the token serves, and its target, if it would redeem now (without
    using it): for a page that redeems links of several purposes (``/account/email``)."""
    row = (
        await conn.execute(
            _PURPOSE_OF, {"hash": _hash_or_refuse(token), "purposes": list(purposes)}
        )
    ).first()
    if row is None or not row.open:
        raise AnonidError("invalid_token")
    if not row.fresh:
        raise AnonidError("token_expired")
    return row.purpose, LinkTarget(row.user_id, row.email)


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
