"""One-time email codes (CONTRACT §6): six digits that travel with a link in one email.

A code lives in the row of the link it travels with (``app.credentials.links``), as Supabase's
one-time tokens share one record between the link and the typed code: using either uses the row.

- Stored only as HMAC-SHA256 keyed by the server secret ``email_codes`` over the row's token
  hash and the digits: a bare hash of six digits is reversed by trying all million.
- One live code per account and purpose: a new one retires the older codes (their links stay).
- It lives ``ANONID_EMAIL_CODE_TTL_MINUTES`` (never longer than its link).
- Every check first spends one of ``MAX_ATTEMPTS`` attempts, in a statement of its own that is
  committed whatever follows; only then are the digits compared (in constant time). So a code is
  dead after five wrong tries even if the sixth is right, and concurrent guesses cannot share a
  count between them.
- A right code is consumed by one guarded ``UPDATE … RETURNING`` in the caller's transaction:
  exactly one of any number of concurrent right answers gets the target, and a transaction that
  rolls back (``email_taken``) leaves the code as it was.
- ``code_expired`` is said only to whoever holds the right digits: to a guesser, an expired code
  looks like any wrong one (so asking for an address's sign-in code reveals nothing about it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.credentials.links import (
    LinkTarget,
    Purpose,
    email_page_link,
    hash_token,
    issue_link_token,
    new_token,
)
from app.errors import AnonidError
from app.outbox.enqueue import enqueue_email
from app.settings import Settings

if TYPE_CHECKING:
    from app.services import Services

# The name of the server secret that keys the hashes (app.server_secrets), not a secret.
CODE_SECRET = "email_codes"  # noqa: S105
CODE_DIGITS = 6
MAX_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Issued:
    """What the email carries: the link's token and the code."""

    token: str
    code: str


@dataclass(frozen=True, slots=True)
class CodeOwner:
    """Whose code is checked: an account by id (a session's), or, for sign-in, by its address."""

    purpose: Purpose
    user_id: UUID | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """A code found and matched, to be consumed by ``consume_code``."""

    token_hash: bytes
    code_hash: bytes


def code_key(svc: Services) -> bytes:
    """The key of every code's hash, shared by all processes (``app.server_secrets``)."""
    return svc.server_secrets[CODE_SECRET]


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def keyed_hash(key: bytes, token_hash: bytes, code: str) -> bytes:
    """The stored form of ``code``: bound to its row, so equal codes never look alike."""
    return hmac.new(
        key, b"anonid-email-code\0" + token_hash + code.encode(), hashlib.sha256
    ).digest()


def normal_code(raw: str) -> str | None:
    """The six digits as typed, spaces and dashes aside (``123 456``); ``None`` if not a code."""
    digits = "".join(raw.split()).replace("-", "")
    if len(digits) != CODE_DIGITS or not (digits.isascii() and digits.isdigit()):
        return None
    return digits


_RETIRE = sa.text(
    "UPDATE link_tokens SET code_hash = NULL"
    " WHERE user_id = :user_id AND purpose = :purpose AND code_hash IS NOT NULL"
)


async def issue_with_code(
    conn: AsyncConnection,
    key: bytes,
    user_id: UUID,
    purpose: Purpose,
    email: str,
    link_ttl: timedelta,
    code_ttl: timedelta,
) -> Issued:
    """A new link and code for ``purpose``, retiring the account's older codes of that purpose."""
    await conn.execute(_RETIRE, {"user_id": user_id, "purpose": purpose})
    token, code = new_token(), new_code()
    code_hash = keyed_hash(key, hash_token(token), code)
    await issue_link_token(
        conn, user_id, purpose, email, link_ttl, token=token, code_hash=code_hash, code_ttl=code_ttl
    )
    return Issued(token, code)


# The email that carries a sign-in or address-change link and its code (CONTRACT §7).
EMAIL_KINDS: dict[Purpose, str] = {"login": "login_code", "email_change": "email_change"}


async def send_code(
    conn: AsyncConnection,
    settings: Settings,
    key: bytes,
    purpose: Purpose,
    user_id: UUID,
    email: str,
) -> None:
    """Issue a link and code for ``purpose`` (both living ``ANONID_EMAIL_CODE_TTL_MINUTES``)
    and queue the email that carries them to ``email``, in the caller's transaction."""
    ttl = timedelta(minutes=settings.email_code_ttl_minutes)
    issued = await issue_with_code(conn, key, user_id, purpose, email, ttl, ttl)
    await _enqueue(conn, settings, purpose, email, user_id, issued)


async def send_nothing(
    conn: AsyncConnection, settings: Settings, key: bytes, purpose: Purpose, email: str
) -> None:
    """The work of ``send_code`` for a request that must not reveal it had no account (or no
    free address) to send to: a token and code made and hashed, the email rendered and written,
    then the write undone (a savepoint rolled back), so the answer takes as long and nothing
    is sent."""
    token, code = new_token(), new_code()
    keyed_hash(key, hash_token(token), code)
    savepoint = await conn.begin_nested()
    try:
        await _enqueue(conn, settings, purpose, email, None, Issued(token, code))
    finally:
        await savepoint.rollback()


async def _enqueue(
    conn: AsyncConnection,
    settings: Settings,
    purpose: Purpose,
    email: str,
    user_id: UUID | None,
    issued: Issued,
) -> None:
    await enqueue_email(
        conn,
        settings,
        kind=EMAIL_KINDS[purpose],
        to=email,
        user_id=user_id,
        context={
            "link": email_page_link(settings, issued.token),
            "code": issued.code,
            "ttl_minutes": settings.email_code_minutes,
        },
    )


# The newest live code of the owner: by account, or by the registered account of an address
# (and sent to that address, so a code outlives no change of address).
_BY_USER = "user_id = :user_id AND purpose = :purpose"
_BY_EMAIL = (
    "user_id = (SELECT id FROM users WHERE email = :email AND NOT is_anonymous)"
    " AND purpose = :purpose AND email = :email"
)


def _latest(finder: str) -> str:
    return (
        f"SELECT token_hash FROM link_tokens WHERE {finder}"
        " AND code_hash IS NOT NULL AND used_at IS NULL ORDER BY created_at DESC LIMIT 1"
    )


def _take(finder: str) -> sa.TextClause:
    # The guard is checked again on the row's newest version when a concurrent attempt holds it
    # (READ COMMITTED re-evaluates the WHERE clause), so attempts never exceed MAX_ATTEMPTS.
    return sa.text(
        f"""
UPDATE link_tokens SET code_attempts = code_attempts + 1
WHERE token_hash = ({_latest(finder)})
  AND code_hash IS NOT NULL AND used_at IS NULL AND code_expires_at > now()
  AND code_attempts < :max
RETURNING token_hash, code_hash
"""
    )


def _status(finder: str) -> sa.TextClause:
    return sa.text(
        "SELECT token_hash, code_hash, code_attempts < :max AS tries_left,"
        " code_expires_at > now() AS fresh"
        f" FROM link_tokens WHERE token_hash = ({_latest(finder)})"
    )


_TAKE = {False: _take(_BY_USER), True: _take(_BY_EMAIL)}
_STATUS = {False: _status(_BY_USER), True: _status(_BY_EMAIL)}

_CONSUME = sa.text(
    """
UPDATE link_tokens SET used_at = now()
WHERE token_hash = :token_hash AND code_hash = :code_hash AND used_at IS NULL
  AND code_expires_at > now()
RETURNING user_id, email
"""
)
_EXPIRED = sa.text(
    "SELECT 1 FROM link_tokens WHERE token_hash = :token_hash AND code_hash = :code_hash"
    " AND used_at IS NULL AND code_expires_at <= now()"
)


def _matches(key: bytes, row: Any, code: str) -> bool:
    return hmac.compare_digest(bytes(row.code_hash), keyed_hash(key, bytes(row.token_hash), code))


async def check_code(conn: AsyncConnection, key: bytes, owner: CodeOwner, raw: str) -> Attempt:
    """Spend one attempt on the owner's code and compare: the ``Attempt`` of a right code, else
    ``invalid_code`` (or ``code_expired`` for the right digits of an expired code). ``conn``
    must commit each statement by itself (``Services.single_statement``): the attempt counts even
    though the request then fails."""
    code = normal_code(raw)
    if code is None:  # could never be right: spends nothing
        raise AnonidError("invalid_code")
    by_email = owner.user_id is None
    params = {
        "user_id": owner.user_id,
        "email": owner.email,
        "purpose": owner.purpose,
        "max": MAX_ATTEMPTS,
    }
    taken = (await conn.execute(_TAKE[by_email], params)).first()
    if taken is not None:
        if _matches(key, taken, code):
            return Attempt(bytes(taken.token_hash), bytes(taken.code_hash))
        raise AnonidError("invalid_code")
    status = (await conn.execute(_STATUS[by_email], params)).first()
    if (
        status is not None
        and status.tries_left
        and not status.fresh
        and _matches(key, status, code)
    ):
        raise AnonidError("code_expired")
    raise AnonidError("invalid_code")


async def consume_code(conn: AsyncConnection, attempt: Attempt) -> LinkTarget:
    """Use the matched code (and so its link) in the caller's transaction; exactly one of any
    number of concurrent callers gets the target."""
    params = {"token_hash": attempt.token_hash, "code_hash": attempt.code_hash}
    row = (await conn.execute(_CONSUME, params)).first()
    if row is not None:
        return LinkTarget(row.user_id, row.email)
    if (await conn.execute(_EXPIRED, params)).first() is not None:
        raise AnonidError("code_expired")
    raise AnonidError("invalid_code")
