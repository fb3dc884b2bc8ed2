"""Anonymous accounts: create, renew (touch), and profile data.

Each function is one statement, so on the hot pool (``app.pgpool``) it is one round trip and its
own transaction; on a SQLAlchemy connection inside a larger transaction it simply joins it.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import orjson

from app.errors import AnonidError
from app.ids import guest_username, new_id
from app.lifecycle.events import event_cte, event_params
from app.lifecycle.users import USER_COLUMNS
from app.pgpool import Db, Statement, fetchrow

MAX_DEPTH = 32


def _create(events: str) -> Statement:
    return Statement(
        f"""
WITH u AS (
    INSERT INTO users (id, username, is_anonymous, data, created_at, updated_at)
    VALUES (:id, :username, true, '{{}}'::jsonb, now(), now())
    RETURNING {USER_COLUMNS}
), {events}
SELECT * FROM u
"""
    )


_CREATE = _create(event_cte())
# Without webhooks configured, the webhook CTE would still be planned and run (over an empty
# array) for every new guest: about 10 us of PostgreSQL's CPU per statement (bench/NOTES.md).
_CREATE_NO_HOOKS = _create(event_cte(hooks=False))

# Sliding renewal touches at most once a day, so a busy guest does not rewrite its row per request.
_TOUCH = Statement(
    f"""
UPDATE users SET updated_at = now()
WHERE id = :id AND session_version = :sv AND updated_at < now() - interval '1 day'
RETURNING {USER_COLUMNS}
"""
)

_PATCH = Statement(
    """
UPDATE users SET data = jsonb_merge_patch(data, CAST(:patch AS jsonb)), updated_at = now()
WHERE id = :id AND session_version = :sv
  AND octet_length(jsonb_merge_patch(data, CAST(:patch AS jsonb))::text) <= :max
RETURNING data
"""
)

_PUT = Statement(
    """
UPDATE users SET data = CAST(:data AS jsonb), updated_at = now()
WHERE id = :id AND session_version = :sv AND octet_length(CAST(:data AS jsonb)::text) <= :max
RETURNING data
"""
)

_SESSION_VERSION = Statement("SELECT session_version FROM users WHERE id = :id")


async def create_anonymous(db: Db, webhook_urls: list[str]) -> Any:
    """A new anonymous account and its ``user.anonymous_created`` event, in one statement."""
    user_id = new_id()
    params = event_params("user.anonymous_created", user_id, {"id": str(user_id)}, webhook_urls)
    params.update(id=user_id, username=guest_username())
    row = await fetchrow(db, _CREATE if webhook_urls else _CREATE_NO_HOOKS, params)
    assert row is not None  # an INSERT … RETURNING returns its row or raises
    return row


async def touch(db: Db, user_id: UUID, session_version: int) -> None:
    """Mark an anonymous account as recently used (keeps it from the cull)."""
    await fetchrow(db, _TOUCH, {"id": user_id, "sv": session_version})


def validate_data(doc: Any, *, patch: bool) -> None:
    """Profile data is a JSON object of bounded depth that PostgreSQL's jsonb can store."""
    if not isinstance(doc, dict):
        raise AnonidError("invalid_data", "Profile data must be a JSON object.")
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise AnonidError("invalid_data", f"Profile data may nest at most {MAX_DEPTH} levels.")
        if isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    raise AnonidError("invalid_data", "Keys may not contain NUL characters.")
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str) and "\x00" in value:
            raise AnonidError("invalid_data", "Strings may not contain NUL characters.")
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
            raise AnonidError("invalid_data", "Integers must fit in 64 bits.")


async def _data_write(db: Db, stmt: Statement, params: dict[str, Any]) -> dict[str, Any]:
    row = await fetchrow(db, stmt, params)
    if row is not None:
        return row[0]  # type: ignore[no-any-return]
    # Rare path: find out whether the session or the size refused the write.
    found = await fetchrow(db, _SESSION_VERSION, {"id": params["id"]})
    if found is None or found[0] != params["sv"]:
        raise AnonidError("invalid_session")
    raise AnonidError(
        "data_too_large", f"Profile data may be at most {params['max']} bytes once stored."
    )


async def patch_data(
    db: Db,
    user_id: UUID,
    session_version: int,
    patch: dict[str, Any],
    max_bytes: int,
) -> dict[str, Any]:
    """Apply an RFC 7396 merge patch atomically in the database; concurrent patches never lose keys."""
    validate_data(patch, patch=True)
    params = {
        "id": user_id,
        "sv": session_version,
        "max": max_bytes,
        "patch": orjson.dumps(patch).decode(),
    }
    return await _data_write(db, _PATCH, params)


async def replace_data(
    db: Db, user_id: UUID, session_version: int, data: dict[str, Any], max_bytes: int
) -> dict[str, Any]:
    """Replace the whole profile document."""
    validate_data(data, patch=False)
    params = {
        "id": user_id,
        "sv": session_version,
        "max": max_bytes,
        "data": orjson.dumps(data).decode(),
    }
    return await _data_write(db, _PUT, params)
