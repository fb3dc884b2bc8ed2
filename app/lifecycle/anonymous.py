"""Anonymous accounts: create (with their first session), and profile data.

Each function is one statement, so on the hot pool (``app.platform.pgpool``) it is one round trip and its
own transaction; on a SQLAlchemy connection inside a larger transaction it simply joins it. Data
writes check the caller's session in the same statement (``app.lifecycle.users.SESSION_ALIVE``).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson

from app.errors import AnonidError
from app.hooks.challenge import Solved
from app.lifecycle.events import event_cte, event_params
from app.lifecycle.users import SESSION_ALIVE, USER_COLUMNS, session_params
from app.platform.ids import guest_username, new_id
from app.platform.pgpool import Db, Statement, fetchrow
from app.sessions.store import SESSION_OF_NEW_USER, NewUser
from app.settings import Settings

MAX_DEPTH = 32


# The guest, its first session (app.sessions.store.start) and its event: one statement.
def _create(events: str) -> Statement:
    return Statement(
        f"""
WITH u AS (
    INSERT INTO users (id, username, is_anonymous, data, created_at, updated_at)
    VALUES (:id, :username, true, '{{}}'::jsonb, now(), now())
    RETURNING {USER_COLUMNS}
), {events}, {SESSION_OF_NEW_USER}
SELECT u.*, s.created_at AS session_created_at FROM u, s
"""
    )


# The same, paid for with a solved challenge (app.hooks.challenge): the challenge is spent first
# and the guest, its event and its session exist only if this statement spent it, so one solution
# makes one guest whatever the number of processes; a spent one returns no row.
def _create_spending(events: str) -> Statement:
    return Statement(
        f"""
WITH spent AS (
    INSERT INTO spent_challenges (challenge, expires_at)
    VALUES (:challenge, :challenge_expires)
    ON CONFLICT DO NOTHING
    RETURNING challenge
), u AS (
    INSERT INTO users (id, username, is_anonymous, data, created_at, updated_at)
    SELECT CAST(:id AS uuid), CAST(:username AS text), true, '{{}}'::jsonb, now(), now()
    FROM spent
    RETURNING {USER_COLUMNS}
), {events}, {SESSION_OF_NEW_USER}
SELECT u.*, s.created_at AS session_created_at FROM u, s
"""
    )


# The event of a guest that may not be made: written only with the guest.
_EVENT_OF_GUEST = (
    "SELECT CAST(:event_id AS uuid), CAST(:event_type AS text), u.id, "
    "CAST(:event_payload AS jsonb), now() FROM u"
)

_CREATE = _create(event_cte())
# Without webhooks configured, the webhook CTE would still be planned and run (over an empty
# array) for every new guest: about 10 us of PostgreSQL's CPU per statement (bench/NOTES.md).
_CREATE_NO_HOOKS = _create(event_cte(hooks=False))
_CREATE_SPENDING = _create_spending(event_cte(_EVENT_OF_GUEST))
_CREATE_SPENDING_NO_HOOKS = _create_spending(event_cte(_EVENT_OF_GUEST, hooks=False))

# The merge runs once: the CTE computes it and the UPDATE both stores it and checks its size.
# FOR UPDATE makes the CTE wait for a concurrent patch of the row and then read the version it
# committed (so no key is lost), and MATERIALIZED keeps PostgreSQL from inlining the CTE, which
# would copy the merge into the SET and the WHERE again.
_PATCH = Statement(
    f"""
WITH merged AS MATERIALIZED (
    SELECT id, jsonb_merge_patch(data, CAST(:patch AS jsonb)) AS data
    FROM users u
    WHERE id = :id AND session_version = :sv AND {SESSION_ALIVE}
    FOR UPDATE
)
UPDATE users SET data = merged.data, updated_at = now()
FROM merged
WHERE users.id = merged.id AND octet_length(merged.data::text) <= :max
RETURNING users.data
"""
)

_PUT = Statement(
    f"""
UPDATE users u SET data = CAST(:data AS jsonb), updated_at = now()
WHERE id = :id AND session_version = :sv AND {SESSION_ALIVE}
  AND octet_length(CAST(:data AS jsonb)::text) <= :max
RETURNING data
"""
)

_SESSION_LIVE = Statement(
    f"SELECT 1 FROM users u WHERE id = :id AND session_version = :sv AND {SESSION_ALIVE}"
)


def new_guest(webhook_urls: list[str], solved: Solved | None = None) -> NewUser:
    """A new anonymous account and its ``user.anonymous_created`` event, to be inserted with its
    first session by ``app.sessions.store.start``, all in one statement; with ``solved``, only if
    that statement spends the challenge (else ``challenge_failed``)."""
    user_id = new_id()
    params = event_params("user.anonymous_created", user_id, {"id": str(user_id)}, webhook_urls)
    params.update(id=user_id, username=guest_username())
    if solved is None:
        return NewUser(user_id, _CREATE if webhook_urls else _CREATE_NO_HOOKS, params)
    params.update(challenge=solved.challenge, challenge_expires=solved.expires_at)
    statement = _CREATE_SPENDING if webhook_urls else _CREATE_SPENDING_NO_HOOKS
    return NewUser(user_id, statement, params, refused="challenge_failed")


def validate_data(doc: Any, *, patch: bool, max_bytes: int) -> str:
    """Profile data (or a merge patch) as the JSON text to send to PostgreSQL, once it is known
    to be an object jsonb can store and within the work one request may ask of the database.

    The bounds are derived from ``max_bytes`` (``ANONID_DATA_MAX_BYTES``) so they follow an
    operator who raises it, and no document that could be stored trips them:
    - members (object keys plus array items, at every depth): ``max_bytes // 2``. Each member
      takes at least two bytes of JSON (``0,``), so a document within the size limit never has
      more, and a patch with more is not editing a profile but asking the merge to work.
    - bytes: a document at most ``max_bytes`` (the stored limit, checked here on the compact JSON
      and again by the statement on what PostgreSQL stores); a patch at most twice that, room to
      remove every key of a full document and set as many new ones.
    - depth: ``MAX_DEPTH`` levels, far beyond any profile and well within jsonb's own limits.
    """
    if not isinstance(doc, dict):
        raise AnonidError("invalid_data", "Profile data must be a JSON object.")
    max_members = max_bytes // 2
    members = 0
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise AnonidError("invalid_data", f"Profile data may nest at most {MAX_DEPTH} levels.")
        if isinstance(value, (dict, list)):
            members += len(value)
            if members > max_members:
                raise AnonidError(
                    "invalid_data",
                    f"Profile data may have at most {max_members} keys and array items at once.",
                )
            if isinstance(value, list):
                stack.extend((item, depth + 1) for item in value)
                continue
            for key, item in value.items():
                if "\x00" in key:
                    raise AnonidError("invalid_data", "Keys may not contain NUL characters.")
                stack.append((item, depth + 1))
        elif isinstance(value, str) and "\x00" in value:
            raise AnonidError("invalid_data", "Strings may not contain NUL characters.")
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
            raise AnonidError("invalid_data", "Integers must fit in 64 bits.")
    text = orjson.dumps(doc)
    limit = 2 * max_bytes if patch else max_bytes
    if len(text) > limit:
        what = "A merge patch" if patch else "Profile data"
        raise AnonidError("data_too_large", f"{what} may be at most {limit} bytes.")
    return text.decode()


async def _data_write(db: Db, stmt: Statement, params: dict[str, Any]) -> dict[str, Any]:
    row = await fetchrow(db, stmt, params)
    if row is not None:
        return row[0]  # type: ignore[no-any-return]
    # Rare path: find out whether the session or the size refused the write.
    if await fetchrow(db, _SESSION_LIVE, params) is None:
        raise AnonidError("invalid_session")
    raise AnonidError(
        "data_too_large", f"Profile data may be at most {params['max']} bytes once stored."
    )


async def patch_data(
    db: Db,
    settings: Settings,
    user_id: UUID,
    session_version: int,
    sid: UUID,
    patch: dict[str, Any],
) -> dict[str, Any]:
    """Apply an RFC 7396 merge patch atomically in the database; concurrent patches never lose keys."""
    max_bytes = settings.data_max_bytes
    params = session_params(settings, user_id, session_version, sid)
    params.update(max=max_bytes, patch=validate_data(patch, patch=True, max_bytes=max_bytes))
    return await _data_write(db, _PATCH, params)


async def replace_data(
    db: Db,
    settings: Settings,
    user_id: UUID,
    session_version: int,
    sid: UUID,
    data: dict[str, Any],
) -> dict[str, Any]:
    """Replace the whole profile document."""
    max_bytes = settings.data_max_bytes
    params = session_params(settings, user_id, session_version, sid)
    params.update(max=max_bytes, data=validate_data(data, patch=False, max_bytes=max_bytes))
    return await _data_write(db, _PUT, params)
