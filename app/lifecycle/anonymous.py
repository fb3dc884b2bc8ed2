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
from app.lifecycle.events import event_cte
from app.lifecycle.users import SESSION_ALIVE, USER_COLUMNS, session_params
from app.platform.coalesce import Coalescer
from app.platform.ids import guest_username, new_id
from app.platform.pgpool import Db, HotPool, Statement, fetch, fetchrow
from app.sessions.store import SESSIONS_OF_NEW_USERS, NewUser
from app.settings import Settings

MAX_DEPTH = 32


# New guests, each with its first session (app.sessions.store.start) and its event, as many as
# arrive together (GuestInserts): one statement. ``given`` holds the guests' values, one array
# each, and ``g`` those to create: all of them or, when each pays with a solved challenge
# (app.hooks.challenge), those whose challenge this statement spent. The spent challenges' key
# makes one solution one guest across every process, DISTINCT ON within the statement; a guest
# not created returns no row.
def _create_many(*, hooks: bool, paid: bool) -> Statement:
    events = event_cte(
        "SELECT g.event_id, CAST(:event_type AS text), g.id, jsonb_build_object('id', g.id), "
        "now() FROM g",
        hooks=hooks,
    )
    arrays = ", CAST(:challenges AS bytea[]), CAST(:expiries AS timestamptz[])" if paid else ""
    columns = ", challenge, challenge_expires" if paid else ""
    to_create = "g AS (SELECT * FROM given)"
    if paid:
        to_create = """spent AS (
    INSERT INTO spent_challenges (challenge, expires_at)
    SELECT DISTINCT ON (challenge) challenge, challenge_expires FROM given
    ON CONFLICT DO NOTHING
    RETURNING challenge
), g AS (
    SELECT DISTINCT ON (given.challenge) given.*
    FROM given JOIN spent ON spent.challenge = given.challenge
    ORDER BY given.challenge, given.id
)"""
    return Statement(
        f"""
WITH given AS (
    SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:usernames AS text[]),
                         CAST(:event_ids AS uuid[]), CAST(:sids AS uuid[]),
                         CAST(:user_agents AS text[]), CAST(:families AS bytea[]),
                         CAST(:refresh_hashes AS bytea[]){arrays})
        AS given(id, username, event_id, sid, user_agent, family, refresh_hash{columns})
), {to_create}, u AS (
    INSERT INTO users (id, username, is_anonymous, data, created_at, updated_at)
    SELECT g.id, g.username, true, '{{}}'::jsonb, now(), now() FROM g
    RETURNING {USER_COLUMNS}
), {events}, {SESSIONS_OF_NEW_USERS}
SELECT u.*, s.created_at AS session_created_at FROM u JOIN s ON s.user_id = u.id
"""
    )


# (webhooks configured, paid with a challenge) -> statement. Without webhooks, the webhook CTE
# would still be planned and run (over an empty array) for every statement: about 10 us of
# PostgreSQL's CPU each (bench/NOTES.md).
_CREATE_MANY = {
    (hooks, paid): _create_many(hooks=hooks, paid=paid)
    for hooks in (False, True)
    for paid in (False, True)
}

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


# Statements under way at once for new guests, per process; the guests that arrive meanwhile wait
# and go together in the next. Fewer lanes make larger groups (less CPU a guest), more keep a slow
# commit from holding up every new guest: on two cores 1 and 2 did best, 4 and 8 worse
# (bench/NOTES.md); two leave a lane when one statement stalls.
LANES = 2
MOST_PER_STATEMENT = 64


class GuestInserts:
    """This process's new guests (``new_guest``), each with its first session and its
    ``user.anonymous_created`` event, written by one statement for every group of guests that
    arrives while earlier ones are being written (``app.platform.coalesce``): under load
    PostgreSQL's per-statement costs and the commit are shared. Each guest is committed before its
    request hears of it; a statement that fails, fails every request of its group. With
    ``paid``, each guest carries a solved challenge and exists only if its statement spent it."""

    def __init__(self, pool: HotPool, webhook_urls: list[str], *, paid: bool) -> None:
        self._pool = pool
        self._urls = webhook_urls
        self._paid = paid
        self._statement = _CREATE_MANY[(bool(webhook_urls), paid)]
        self._together: Coalescer[dict[str, Any], Any] = Coalescer(
            self._insert, lanes=min(LANES, pool.size), most=MOST_PER_STATEMENT
        )

    async def insert(self, params: dict[str, Any]) -> Any:
        """The guest's row (``u.*`` and ``session_created_at``) once committed; ``None`` when
        its challenge was spent already."""
        return await self._together.submit(params)

    async def _insert(self, guests: list[dict[str, Any]]) -> list[Any]:
        columns: dict[str, Any] = {
            "ids": [g["id"] for g in guests],
            "usernames": [g["username"] for g in guests],
            "event_ids": [g["event_id"] for g in guests],
            "sids": [g["sid"] for g in guests],
            "user_agents": [g["user_agent"] for g in guests],
            "families": [g["family"] for g in guests],
            "refresh_hashes": [g["refresh_hash"] for g in guests],
            "event_type": "user.anonymous_created",
            "webhook_urls": self._urls,
        }
        if self._paid:
            columns["challenges"] = [g["solved"].challenge for g in guests]
            columns["expiries"] = [g["solved"].expires_at for g in guests]
        rows = await fetch(self._pool, self._statement, columns)
        by_id = {row["id"]: row for row in rows}
        return [by_id.get(g["id"]) for g in guests]


def new_guest(together: GuestInserts, solved: Solved | None = None) -> NewUser:
    """A new anonymous account, to be inserted with its first session and its
    ``user.anonymous_created`` event by ``app.sessions.store.start``, in the statement of its
    group (``together``); paid for with ``solved`` when the challenge is on (else
    ``challenge_failed`` if that solution was spent already)."""
    user_id = new_id()
    params = {"id": user_id, "username": guest_username(), "event_id": new_id(), "solved": solved}
    refused = None if solved is None else "challenge_failed"
    return NewUser(user_id, params, together.insert, refused=refused)


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
