"""Refresh tokens (CONTRACT §4): opaque, single use, rotated on every use, stored only as SHA-256.

A token reads ``<user>.<sid>.<family>.<secret>``: the user's and the session's ids (the session's
key), the session's family secret (128 bits, the same in every token of the session) and 256 bits
of its own, all from ``secrets``, base64url.
The session row keeps the SHA-256 of the family secret and of the live and last spent tokens; the
token itself is never stored. So one row of constant size tells every kind of token apart:

    the token is                                 answer
    live (or a sibling issued in the interval)   rotate: a new pair, the used one is spent
    spent at most ANONID_REFRESH_REUSE_SECONDS   a new pair in the same session (two tabs, a
      ago                                        retried request); the live one stays live
    any other token of the family                reuse: the session ends, ``user.refresh_reused``
      (spent longer ago, or generations back)     is recorded and a registered user is sent
                                                  ``security_alert``; then ``invalid_session``
    made up (wrong family), for an ended,        ``invalid_session``, nothing changes
      expired or unknown session

Guarantees:
- rotation is one statement: it locks the session row, so concurrent refreshes of one token are
  serialised and each sees what the previous one wrote (one session, however many succeed);
- the ending for reuse is committed even though the request fails;
- with the ``custom_claims`` hook on, the hook is asked before the rotation (no connection held
  while it answers), so a hook that fails leaves the presented token as it was;
- only someone holding a token of the session can end it this way: the family secret is in no
  access token, so knowing a ``sid`` is not enough;
- a refresh moves ``last_used_at`` and touches the account's ``updated_at`` at most once a day,
  so the cull follows real activity; within a day it changes no indexed column (a HOT update).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import AnonidError
from app.hooks.calls import custom_claims
from app.lifecycle.events import record_event
from app.lifecycle.users import USER_COLUMNS, user_columns
from app.outbox.enqueue import enqueue_email
from app.platform.pgpool import Db, Statement, fetchrow, row_mapping
from app.sessions.alive import alive, lifetime_params

if TYPE_CHECKING:
    from app.services import Services
    from app.sessions.store import Pair

log = logging.getLogger("anonid.sessions")

FAMILY_BYTES = 16
SECRET_BYTES = 32
MAX_TOKEN_CHARS = 128
# Siblings issued inside the reuse interval that stay live together (the newest are kept).
MAX_LIVE = 16


@dataclass(frozen=True, slots=True)
class RefreshSecret:
    token: str
    token_hash: bytes
    family_hash: bytes


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _mint(user_id: UUID, sid: UUID, family: str) -> RefreshSecret:
    secret = secrets.token_urlsafe(SECRET_BYTES)
    token = f"{_b64(user_id.bytes)}.{_b64(sid.bytes)}.{family}.{secret}"
    return RefreshSecret(token, _sha256(token), _sha256(family))


def new_refresh(user_id: UUID, sid: UUID) -> RefreshSecret:
    """The first refresh token of a new session (and its family)."""
    return _mint(user_id, sid, secrets.token_urlsafe(FAMILY_BYTES))


@dataclass(frozen=True, slots=True)
class Presented:
    user_id: UUID
    sid: UUID
    family: str
    token_hash: bytes
    family_hash: bytes


def _uuid(part: str) -> UUID:
    return UUID(bytes=base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def parse(token: str) -> Presented | None:
    """The parts of a well-formed token; ``None`` for anything else."""
    if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        return None
    parts = token.split(".")
    if len(parts) != 4 or not all(parts):
        return None
    user_part, sid_part, family, _ = parts
    try:
        user_id, sid = _uuid(user_part), _uuid(sid_part)
    except (ValueError, binascii.Error):
        return None
    return Presented(user_id, sid, family, _sha256(token), _sha256(family))


_REDEEMABLE = (
    "(CAST(:token_hash AS bytea) = ANY(s.live_hashes)"
    " OR (CAST(:token_hash AS bytea) = ANY(s.spent_hashes)"
    " AND s.rotated_at > now() - make_interval(secs => CAST(:reuse AS integer))))"
)

# A live token is spent with its siblings (they were alternatives to it); a token spent inside the
# interval adds a sibling and spends nothing, so whichever answer a browser keeps stays good.
_ROTATE = Statement(
    f"""
WITH found AS (
    SELECT s.user_id, s.id, s.live_hashes,
           CAST(:token_hash AS bytea) = ANY(s.live_hashes) AS is_live
    FROM sessions s JOIN users u ON u.id = s.user_id
    WHERE s.user_id = :user_id AND s.id = :sid AND s.family_hash = :family_hash
      AND {alive()} AND {_REDEEMABLE}
    FOR UPDATE OF s
), rotated AS (
    UPDATE sessions SET
        live_hashes = CASE WHEN found.is_live THEN ARRAY[CAST(:new_hash AS bytea)]
            ELSE (found.live_hashes || CAST(:new_hash AS bytea))[
                greatest(1, cardinality(found.live_hashes) + 2 - {MAX_LIVE}):] END,
        spent_hashes = CASE WHEN found.is_live THEN found.live_hashes
            ELSE sessions.spent_hashes END,
        rotated_at = CASE WHEN found.is_live THEN now() ELSE sessions.rotated_at END,
        last_used_at = now(),
        -- The same value all day long: the update stays HOT (no index entry written).
        last_used_day = greatest(sessions.last_used_day, (now() AT TIME ZONE 'UTC')::date)
    FROM found
    WHERE sessions.user_id = found.user_id AND sessions.id = found.id
    RETURNING sessions.user_id, sessions.created_at
), touched AS (
    UPDATE users SET updated_at = now()
    WHERE id = (SELECT user_id FROM rotated) AND updated_at < now() - interval '1 day'
    RETURNING {USER_COLUMNS}
)
SELECT t.*, r.created_at AS session_created_at
FROM rotated r, LATERAL (
    SELECT * FROM touched
    UNION ALL
    SELECT {USER_COLUMNS} FROM users
    WHERE users.id = r.user_id AND NOT EXISTS (SELECT FROM touched)
) t
"""
)

# Why a token was not redeemed, with the session locked so the answer cannot change under us.
_DIAGNOSE = Statement(
    f"""
SELECT {alive()} AS alive, {_REDEEMABLE} AS redeemable, u.is_anonymous, u.email
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.user_id = :user_id AND s.id = :sid AND s.family_hash = :family_hash
FOR UPDATE OF s
"""
)

# The user of a redeemable token, read without a lock before the rotation when the custom_claims
# hook must be asked first: a hook that fails then leaves the token unspent.
_PEEK = Statement(
    f"""
SELECT {user_columns("u")}
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.user_id = :user_id AND s.id = :sid AND s.family_hash = :family_hash
  AND {alive()} AND {_REDEEMABLE}
"""
)

_END_REUSED = Statement(
    "UPDATE sessions SET ended_at = now(), ended_reason = 'refresh_reused' "
    "WHERE user_id = :user_id AND id = :sid AND ended_at IS NULL RETURNING id"
)


async def redeem(db: Db, svc: Services, token: str) -> Pair:
    """Rotate ``token``: the new pair of its session, or ``invalid_session`` (unknown, expired,
    ended or reused; a reuse ends the session first, in a transaction of its own)."""
    from app.sessions.store import pair_for

    presented = parse(token)
    if presented is None:
        raise AnonidError("invalid_session")
    app = await _app_claims(db, svc, presented)
    for _ in range(2):
        new = _mint(presented.user_id, presented.sid, presented.family)
        params = {
            "user_id": presented.user_id,
            "sid": presented.sid,
            "family_hash": presented.family_hash,
            "token_hash": presented.token_hash,
            "new_hash": new.token_hash,
            "reuse": svc.settings.refresh_reuse_seconds,
            **lifetime_params(svc.settings),
        }
        row = await fetchrow(db, _ROTATE, params)
        if row is not None:
            created_at = row_mapping(row)["session_created_at"]
            return pair_for(svc, row, presented.sid, created_at, new.token, app)
        if not await _end_if_reused(svc, params):
            break  # redeemable again: a concurrent rotation moved on while we looked; retry
    raise AnonidError("invalid_session")


async def _app_claims(db: Db, svc: Services, presented: Presented) -> dict[str, Any] | None:
    """The application's claims for the rotated access token (``custom_claims``), asked before
    the rotation with no connection held; ``None`` when the hook is off, allowed to fail, or the
    token is not redeemable (the rotation then says why)."""
    if not svc.hooks.custom_claims:
        return None
    params = {
        "user_id": presented.user_id,
        "sid": presented.sid,
        "family_hash": presented.family_hash,
        "token_hash": presented.token_hash,
        "reuse": svc.settings.refresh_reuse_seconds,
        **lifetime_params(svc.settings),
    }
    user = await fetchrow(db, _PEEK, params)
    if user is None:
        return None
    return await custom_claims(svc.hooks, user)


async def _end_if_reused(svc: Services, params: dict[str, Any]) -> bool:
    """``False`` when the token turned out redeemable after all (the caller retries once); else
    ends the session if the token was a spent one of it, and returns ``True``."""
    async with svc.engine.begin() as conn:
        found = await fetchrow(conn, _DIAGNOSE, params)
        if found is None or not found.alive:
            return True
        if found.redeemable:
            return False
        await _end_for_reuse(conn, svc, params["user_id"], params["sid"], found)
    return True


async def _end_for_reuse(
    conn: AsyncConnection, svc: Services, user_id: UUID, sid: UUID, found: Any
) -> None:
    settings = svc.settings
    await fetchrow(conn, _END_REUSED, {"user_id": user_id, "sid": sid})
    await record_event(
        conn,
        "user.refresh_reused",
        user_id,
        {"id": str(user_id), "session": str(sid)},
        settings.webhook_url_list,
    )
    if not found.is_anonymous and found.email is not None:
        await enqueue_email(
            conn,
            settings,
            kind="security_alert",
            to=found.email,
            user_id=user_id,
            context={
                "login_url": f"{settings.public_url}/account/login",
                "reset_request_url": f"{settings.public_url}/account/reset",
            },
        )
    log.warning("refresh token reused: session %s of user %s ended", sid, user_id)
