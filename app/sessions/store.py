"""Starting, listing and ending sessions: one row of ``sessions`` per sign-in.

``start`` is the one way a session begins, whatever proved who the user is (a new guest, a
password, a link, a conversion, a reset): it writes the session row, with only hashes of its
refresh token, in the caller's transaction or statement, and returns the pair (``Pair``). With
``end_others`` (every session-version bump) it also ends every other session of the user in the
same statement; with ``replaces`` it ends the session the request came with (a browser that signs
in to another account leaves no orphan behind).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import AnonidError
from app.hooks.calls import custom_claims
from app.platform.ids import new_id
from app.platform.pgpool import Db, Statement, fetchrow, row_mapping
from app.services import Services
from app.sessions.access import IssuedToken
from app.sessions.alive import alive, lifetime_params
from app.sessions.refresh import RefreshSecret, new_refresh
from app.settings import Settings

DAY = 86400

# The first sessions of users inserted by the same statement, one per row of a CTE ``u`` joined
# to the guests' values in a CTE ``g`` (``app.lifecycle.anonymous.GuestInserts``): ``g`` has
# ``id`` (the user's), ``sid``, ``user_agent``, ``family`` and ``refresh_hash``.
SESSIONS_OF_NEW_USERS = """
s AS (
    INSERT INTO sessions (id, user_id, created_at, last_used_at, user_agent, family_hash,
                          live_hashes)
    SELECT g.sid, u.id, now(), now(), g.user_agent, g.family, ARRAY[g.refresh_hash]
    FROM u JOIN g ON g.id = u.id
    RETURNING user_id, created_at
)"""

_START = Statement(
    """
WITH ended AS (
    UPDATE sessions SET ended_at = now(), ended_reason = :reason
    WHERE ended_at IS NULL
      AND ((user_id = :user_id AND CAST(:end_others AS boolean))
           OR (user_id = CAST(:replaced_user AS uuid) AND id = CAST(:replaced AS uuid)))
    RETURNING id
), s AS (
    INSERT INTO sessions (id, user_id, created_at, last_used_at, user_agent, family_hash,
                          live_hashes)
    VALUES (:sid, :user_id, now(), now(), :user_agent, :family,
            ARRAY[CAST(:refresh_hash AS bytea)])
    RETURNING created_at
)
SELECT created_at FROM s
"""
)

_LIST = Statement(
    f"""
SELECT s.id, s.created_at, s.last_used_at, s.user_agent
FROM sessions s JOIN users u ON u.id = s.user_id
WHERE s.user_id = :user_id AND {alive()}
ORDER BY s.created_at DESC, s.id DESC
"""
)

_END = Statement(
    f"""
UPDATE sessions s SET ended_at = now(), ended_reason = :reason
FROM users u
WHERE s.user_id = :user_id AND s.id = :sid AND u.id = s.user_id AND {alive()}
RETURNING s.id
"""
)

_END_ALL = Statement(
    """
UPDATE sessions SET ended_at = now(), ended_reason = :reason
WHERE user_id = :user_id AND ended_at IS NULL
RETURNING id
"""
)


@dataclass(frozen=True, slots=True)
class Pair:
    """A session as the client receives it: the user, a fresh access token, the refresh token
    (shown once, never stored) and the session's remaining lifetime in seconds."""

    user: Any
    access: IssuedToken
    refresh_token: str
    max_age: int

    @property
    def sid(self) -> UUID:
        return self.access.claims.sid


@dataclass(frozen=True, slots=True)
class NewUser:
    """A user to insert with its first session: ``insert(params)`` runs a statement that inserts
    the user in a CTE ``u``, its session with ``SESSIONS_OF_NEW_USERS``, and returns ``u.*`` with
    ``s.created_at AS session_created_at`` (``None``: nothing inserted). ``params`` are the
    user's own; ``start`` adds the session's (``sid``, ``user_agent``, ``family``,
    ``refresh_hash``)."""

    user_id: UUID
    params: dict[str, Any]
    insert: Callable[[dict[str, Any]], Awaitable[Any]]
    # The error when the statement may insert nothing (a guest paid for with a spent challenge).
    refused: str | None = None


def remaining(
    settings: Settings, anonymous: bool, created_at: datetime
) -> tuple[int, float | None]:
    """Seconds the session has left if it is not refreshed again, and its absolute end (epoch
    seconds; ``None`` for a guest, whose session slides for as long as it is used)."""
    if anonymous:
        return settings.anonymous_ttl_days * DAY, None
    hard_end = created_at.timestamp() + settings.session_max_days * DAY
    left = min(settings.session_ttl_days * DAY, int(hard_end - time.time()))
    return max(1, left), hard_end


def pair_for(
    svc: Services,
    user: Any,
    sid: UUID,
    created_at: datetime,
    refresh_token: str,
    app: dict[str, Any] | None = None,
    sign: bool = True,
) -> Pair:
    """Sign the access token of a session whose row is written (or rotated); with
    ``sign=False``, leave it to ``with_app_claims``."""
    row = row_mapping(user)
    max_age, hard_end = remaining(svc.settings, row["is_anonymous"], created_at)
    access = svc.access.issue(
        row["id"],
        row["is_anonymous"],
        row["session_version"],
        sid,
        not_after=hard_end,
        app=app,
        sign=sign,
    )
    return Pair(user, access, refresh_token, max_age)


async def with_app_claims(svc: Services, pair: Pair) -> Pair:
    """The pair of a session that has just begun, its access token carrying the application's
    claims when the ``custom_claims`` hook is on (else ``pair`` itself, at no cost). Called once
    the sign-in's transaction has ended, so no connection waits on the hook; a failure with
    ``ANONID_HOOK_FAILURE=deny`` is ``hook_unavailable`` (the session row stays, unused, and ends
    with retention). A refresh asks the hook before it rotates (``app.sessions.refresh``).
    A pair started with ``sign_later`` is signed here, once, whatever the hook answers."""
    app = await custom_claims(svc.hooks, pair.user) if svc.hooks.custom_claims else None
    if app is None and pair.access.token:
        return pair
    claims = pair.access.claims
    # The same session and expiry; only the application's claims are added.
    access = svc.access.issue(
        claims.sub, claims.anon, claims.sv, claims.sid, not_after=claims.exp, app=app
    )
    return replace(pair, access=access)


async def start(
    db: Db,
    svc: Services,
    user: Any,
    *,
    user_agent: str | None,
    end_others: bool = False,
    replaces: tuple[UUID, UUID] | None = None,
    sign_later: bool = False,
) -> Pair:
    """Begin a session for ``user`` (a user row, or a ``NewUser`` to insert in the same
    statement); ``replaces`` is the (user id, sid) of a session to end in the same statement.
    ``sign_later``: the access token is signed by ``with_app_claims`` (which the caller must
    then call), so a token that gets the application's claims is signed once, not twice."""
    sid = new_id()
    user_id = user.user_id if isinstance(user, NewUser) else row_mapping(user)["id"]
    secret: RefreshSecret = new_refresh(user_id, sid)
    params: dict[str, Any] = {
        "sid": sid,
        "user_agent": user_agent,
        "family": secret.family_hash,
        "refresh_hash": secret.token_hash,
    }
    if isinstance(user, NewUser):
        params.update(user.params)
        row = await user.insert(params)
        if row is None:
            assert user.refused is not None  # else an INSERT … RETURNING returns its row or raises
            raise AnonidError(user.refused)
        created_at = row_mapping(row)["session_created_at"]
        return pair_for(svc, row, sid, created_at, secret.token, sign=not sign_later)
    params.update(
        user_id=user_id,
        end_others=end_others,
        replaced_user=None if replaces is None else replaces[0],
        replaced=None if replaces is None else replaces[1],
        reason="revoked" if end_others else "replaced",
    )
    started = await fetchrow(db, _START, params)
    assert started is not None
    return pair_for(svc, user, sid, started[0], secret.token, sign=not sign_later)


async def list_sessions(
    db: Db, settings: Settings, user_id: UUID, current: UUID
) -> list[dict[str, Any]]:
    """The user's live sessions, newest first, as ``GET /v1/me/sessions`` shows them."""
    assert isinstance(db, AsyncConnection)
    rows = await db.execute(_LIST.clause, {"user_id": user_id, **lifetime_params(settings)})
    return [
        {
            "id": str(r.id),
            "created_at": r.created_at.isoformat(),
            "last_used_at": r.last_used_at.isoformat(),
            "user_agent": r.user_agent,
            "current": r.id == current,
        }
        for r in rows
    ]


async def end_session(
    db: Db, settings: Settings, user_id: UUID, sid: UUID, reason: str = "logout"
) -> bool:
    """End one live session of the user; ``False`` if there is no such live session."""
    params = {"sid": sid, "user_id": user_id, "reason": reason, **lifetime_params(settings)}
    return await fetchrow(db, _END, params) is not None


async def end_all_sessions(db: Db, user_id: UUID, reason: str) -> None:
    """End every session of the user (the caller's too)."""
    await fetchrow(db, _END_ALL, {"user_id": user_id, "reason": reason})
