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
- rotation is one statement (shared with the other rotations of the moment: ``Rotations``): it
  locks the session row, so concurrent refreshes of one token are serialised and each sees what
  the previous one wrote (one session, however many succeed);
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
from app.lifecycle.users import USER_FIELDS, user_columns
from app.outbox.enqueue import enqueue_email
from app.platform.coalesce import Coalescer
from app.platform.pgpool import Db, HotPool, Statement, fetch, fetchrow, row_mapping
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
# Rotations a refresh tries while its token stays redeemable and others of its session come first
# (requests at once from several tabs); past that it is refused, as a reuse outside the interval
# would be.
ATTEMPTS = 8


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


def _redeemable(token_hash: str) -> str:
    """Whether the token whose hash is ``token_hash`` may be redeemed in session ``s``."""
    return (
        f"({token_hash} = ANY(s.live_hashes)"
        f" OR ({token_hash} = ANY(s.spent_hashes)"
        " AND s.rotated_at > now() - make_interval(secs => CAST(:reuse AS integer))))"
    )


_REDEEMABLE = _redeemable("CAST(:token_hash AS bytea)")

# A live token is spent with its siblings (they were alternatives to it); a token spent inside the
# interval adds a sibling and spends nothing, so whichever answer a browser keeps stays good.
# One statement rotates the tokens of every refresh that arrives together (``Rotations``): ``given``
# holds them, one array each, and the answer says which were rotated (by their new hash). Two of
# one session in a group are serialised as if one came after the other: the session's row is
# updated once, for one of them, and the other is told so and tries again (``redeem``).
# The user's row comes from the lookup's join (the same snapshot a second read would see), with
# ``updated_at`` from the once-a-day touch when it happened: PostgreSQL starts every plan node of
# a statement on every execution, and a second read of ``users`` (a UNION of the touched row and
# the untouched one) made the statement's start-up a quarter of its CPU (bench/NOTES.md).
_USER_OUT = ", ".join(
    "coalesce((SELECT t.updated_at FROM touched t WHERE t.id = f.id), f.updated_at) AS updated_at"
    if field == "updated_at"
    else f"f.{field}"
    for field in (*USER_FIELDS, "methods")
)
_ROTATE_MANY = Statement(
    f"""
WITH given AS (
    SELECT * FROM unnest(CAST(:user_ids AS uuid[]), CAST(:sids AS uuid[]),
                         CAST(:family_hashes AS bytea[]), CAST(:token_hashes AS bytea[]),
                         CAST(:new_hashes AS bytea[]))
        AS given(user_id, sid, family_hash, token_hash, new_hash)
), found AS (
    SELECT g.new_hash, s.user_id, s.id AS sid, s.live_hashes,
           g.token_hash = ANY(s.live_hashes) AS is_live, {user_columns("u")}
    FROM given g
    JOIN sessions s ON s.user_id = g.user_id AND s.id = g.sid AND s.family_hash = g.family_hash
    JOIN users u ON u.id = s.user_id
    WHERE {alive()} AND {_redeemable("g.token_hash")}
    FOR UPDATE OF s
), rotated AS (
    UPDATE sessions SET
        live_hashes = CASE WHEN found.is_live THEN ARRAY[found.new_hash]
            ELSE (found.live_hashes || found.new_hash)[
                greatest(1, cardinality(found.live_hashes) + 2 - {MAX_LIVE}):] END,
        spent_hashes = CASE WHEN found.is_live THEN found.live_hashes
            ELSE sessions.spent_hashes END,
        rotated_at = CASE WHEN found.is_live THEN now() ELSE sessions.rotated_at END,
        last_used_at = now(),
        -- The same value all day long: the update stays HOT (no index entry written).
        last_used_day = greatest(sessions.last_used_day, (now() AT TIME ZONE 'UTC')::date)
    FROM found
    WHERE sessions.user_id = found.user_id AND sessions.id = found.sid
    RETURNING found.new_hash, sessions.created_at
), touched AS (
    UPDATE users SET updated_at = now()
    WHERE id IN (SELECT user_id FROM found) AND updated_at < now() - interval '1 day'
    RETURNING id, updated_at
)
SELECT r.new_hash, {_USER_OUT}, r.created_at AS session_created_at
FROM rotated r JOIN found f ON f.new_hash = r.new_hash
"""
)

# Rotations under way at once per process (as for new guests: app.lifecycle.anonymous.LANES).
LANES = 2
MOST_PER_STATEMENT = 64


class Rotations:
    """This process's refresh-token rotations, one statement for every group that arrives while
    earlier ones are being written (``app.platform.coalesce``). Each is committed before its
    request hears of it."""

    def __init__(self, pool: HotPool) -> None:
        self._pool = pool
        self._together: Coalescer[dict[str, Any], Any] = Coalescer(
            self._rotate, lanes=min(LANES, pool.size), most=MOST_PER_STATEMENT
        )

    async def rotate(self, params: dict[str, Any]) -> Any:
        """The user's row with ``session_created_at`` if this rotation was made; ``None`` if
        the token was not redeemable, or another rotation of its session came first."""
        return await self._together.submit(params)

    async def _rotate(self, rotations: list[dict[str, Any]]) -> list[Any]:
        first = rotations[0]  # the settings' values are the same for all
        columns: dict[str, Any] = {
            "user_ids": [r["user_id"] for r in rotations],
            "sids": [r["sid"] for r in rotations],
            "family_hashes": [r["family_hash"] for r in rotations],
            "token_hashes": [r["token_hash"] for r in rotations],
            "new_hashes": [r["new_hash"] for r in rotations],
            "reuse": first["reuse"],
            "anon_days": first["anon_days"],
            "reg_days": first["reg_days"],
            "max_days": first["max_days"],
        }
        rows = await fetch(self._pool, _ROTATE_MANY, columns)
        made = {bytes(row["new_hash"]): row for row in rows}
        return [made.get(r["new_hash"]) for r in rotations]


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
    rotations: Rotations = svc.extras["rotations"]
    for _ in range(ATTEMPTS):
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
        row = await rotations.rotate(params)
        if row is not None:
            created_at = row_mapping(row)["session_created_at"]
            return pair_for(svc, row, presented.sid, created_at, new.token, app)
        if await _end_if_reused(svc, params):
            break  # not redeemable (ended for reuse if it was a spent token of the session)
        # Still redeemable: another rotation of the session came first; try again after it.
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
    """``False`` when the token is redeemable after all (the caller tries again); else ends the
    session if the token was a spent one of it, and returns ``True``."""
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
