"""WebAuthn challenges in flight (CONTRACT §14): single use, five minutes, bound to who asked.

A row is keyed by the challenge itself (64 random bytes), which comes back inside the signed
``clientDataJSON``. A registration challenge is bound to the session that asked (its user, its
session version and its ``sid``); a sign-in challenge to the browser that asked (a SHA-256 of its short cookie)
and, for clients without cookies, to the ``X-Anonid-Challenge-Id`` the options response carried
(its SHA-256). Consuming is one ``DELETE … RETURNING`` guarded by that binding: of any number of
concurrent uses exactly one gets the row, and a use with the wrong binding leaves it to its owner.
Expired rows are removed by retention (``app.outbox.retention``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, TypeGuard
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from webauthn.helpers import generate_challenge

CHALLENGE_TTL = timedelta(minutes=5)
# A browser secret or challenge id as issued (secrets.token_urlsafe(32)); anything else is none.
SECRET_CHARS = 43

Purpose = Literal["register", "login"]

_ISSUE = sa.text(
    """
INSERT INTO webauthn_challenges (challenge, purpose, user_id, session_version, session_id,
                                 browser_hash, client_hash, expires_at)
VALUES (:challenge, :purpose, :user_id, :session_version, :session_id, :browser_hash,
        :client_hash, now() + CAST(:ttl AS interval))
"""
)

_CONSUME_REGISTER = sa.text(
    """
DELETE FROM webauthn_challenges
WHERE challenge = :challenge AND purpose = 'register'
  AND user_id = :user_id AND session_version = :session_version AND session_id = :session_id
RETURNING expires_at > now() AS live
"""
)

_CONSUME_LOGIN = sa.text(
    """
DELETE FROM webauthn_challenges
WHERE challenge = :challenge AND purpose = 'login'
  AND (browser_hash = :browser_hash OR client_hash = :client_hash)
RETURNING expires_at > now() AS live
"""
)


@dataclass(frozen=True, slots=True)
class LoginChallenge:
    challenge: bytes
    client_id: str  # sent back as X-Anonid-Challenge-Id by clients without cookies


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def new_secret() -> str:
    """A browser's challenge cookie value, or a challenge id."""
    return secrets.token_urlsafe(32)


def well_formed(value: str | None) -> TypeGuard[str]:
    return (
        value is not None
        and len(value) == SECRET_CHARS
        and all(c.isalnum() or c in "-_" for c in value)
    )


async def issue_registration_challenge(
    conn: AsyncConnection, user_id: UUID, session_version: int, session_id: UUID
) -> bytes:
    """A new challenge that only this session (its user, version and id) can use."""
    challenge = generate_challenge()
    await conn.execute(
        _ISSUE,
        {
            "challenge": challenge,
            "purpose": "register",
            "user_id": user_id,
            "session_version": session_version,
            "session_id": session_id,
            "browser_hash": None,
            "client_hash": None,
            "ttl": CHALLENGE_TTL,
        },
    )
    return challenge


async def issue_login_challenge(conn: AsyncConnection, browser_secret: str) -> LoginChallenge:
    """A new sign-in challenge for the browser holding ``browser_secret`` or the client holding
    the returned ``client_id``."""
    issued = LoginChallenge(generate_challenge(), new_secret())
    await conn.execute(
        _ISSUE,
        {
            "challenge": issued.challenge,
            "purpose": "login",
            "user_id": None,
            "session_version": None,
            "session_id": None,
            "browser_hash": _digest(browser_secret),
            "client_hash": _digest(issued.client_id),
            "ttl": CHALLENGE_TTL,
        },
    )
    return issued


async def consume_registration_challenge(
    conn: AsyncConnection, challenge: bytes, user_id: UUID, session_version: int, session_id: UUID
) -> bool:
    """Spend the challenge if this session asked for it; whether it was there and unexpired."""
    params = {
        "challenge": challenge,
        "user_id": user_id,
        "session_version": session_version,
        "session_id": session_id,
    }
    row = (await conn.execute(_CONSUME_REGISTER, params)).first()
    return row is not None and bool(row.live)


async def consume_login_challenge(
    conn: AsyncConnection, challenge: bytes, browser_secret: str | None, client_id: str | None
) -> bool:
    """Spend the sign-in challenge if this browser (cookie) or client (challenge id) asked for
    it; whether it was there and unexpired."""
    params = {
        "challenge": challenge,
        "browser_hash": _digest(browser_secret) if well_formed(browser_secret) else None,
        "client_hash": _digest(client_id) if well_formed(client_id) else None,
    }
    if params["browser_hash"] is None and params["client_hash"] is None:
        return False
    row = (await conn.execute(_CONSUME_LOGIN, params)).first()
    return row is not None and bool(row.live)
