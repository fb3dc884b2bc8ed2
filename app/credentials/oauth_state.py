"""Authorization requests in flight (CONTRACT §13): ``state``, ``nonce`` and the PKCE verifier,
kept server-side, bound to the browser that started them, single use, expiring.

A row is keyed by a SHA-256 of its ``state`` and names a SHA-256 of the browser's flow cookie,
so a callback URL (code and state) replayed in another browser, or handed to a victim to sign
them in to the attacker's account (login CSRF), is refused. Redeeming is one
``DELETE … RETURNING``: of any number of concurrent callbacks with one state, exactly one gets
the row. Expired rows are removed by retention (``app.outbox.retention``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

FLOW_TTL = timedelta(minutes=10)
MAX_STATE_CHARS = 512

_START = sa.text(
    """
INSERT INTO oauth_flows (state_hash, browser_hash, provider, code_verifier, nonce, user_id,
                         session_version, return_to, expires_at)
VALUES (:state_hash, :browser_hash, :provider, :code_verifier, :nonce, :user_id,
        :session_version, :return_to, now() + CAST(:ttl AS interval))
"""
)

_REDEEM = sa.text(
    """
DELETE FROM oauth_flows
WHERE state_hash = :state_hash AND browser_hash = :browser_hash
RETURNING provider, code_verifier, nonce, user_id, session_version, return_to,
          expires_at > now() AS live
"""
)


@dataclass(frozen=True, slots=True)
class StartedFlow:
    state: str
    nonce: str
    code_verifier: str


@dataclass(frozen=True, slots=True)
class Flow:
    provider: str
    code_verifier: str
    nonce: str
    user_id: UUID | None
    session_version: int | None
    return_to: str
    live: bool


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def new_browser_secret() -> str:
    """The value of a browser's flow cookie (one per browser, shared by its flows)."""
    return secrets.token_urlsafe(32)


async def start_flow(
    conn: AsyncConnection,
    *,
    provider: str,
    browser_secret: str,
    user_id: UUID | None,
    session_version: int | None,
    return_to: str,
) -> StartedFlow:
    """Remember a new authorization request: who started it and where it returns."""
    started = StartedFlow(
        state=secrets.token_urlsafe(32),
        nonce=secrets.token_urlsafe(32),
        code_verifier=secrets.token_urlsafe(48),  # 64 characters (RFC 7636: 43 to 128)
    )
    await conn.execute(
        _START,
        {
            "state_hash": _digest(started.state),
            "browser_hash": _digest(browser_secret),
            "provider": provider,
            "code_verifier": started.code_verifier,
            "nonce": started.nonce,
            "user_id": user_id,
            "session_version": session_version,
            "return_to": return_to,
            "ttl": FLOW_TTL,
        },
    )
    return started


async def redeem_flow(conn: AsyncConnection, state: str, browser_secret: str) -> Flow | None:
    """Take the request named by ``state`` if this browser started it: ``None`` when unknown,
    spent or another browser's. The row is gone afterwards, expired (``live`` false) or not."""
    if not state or len(state) > MAX_STATE_CHARS or not browser_secret:
        return None
    params = {"state_hash": _digest(state), "browser_hash": _digest(browser_secret)}
    row = (await conn.execute(_REDEEM, params)).first()
    if row is None:
        return None
    return Flow(
        provider=row.provider,
        code_verifier=row.code_verifier,
        nonce=row.nonce,
        user_id=row.user_id,
        session_version=row.session_version,
        return_to=row.return_to,
        live=row.live,
    )
