"""The big database of ``bench/scale.py``: accounts and events written by PostgreSQL itself.

Everything is generated in SQL (``generate_series``), one statement per simulated day, oldest day
first, so the heap and the time-ordered indexes (UUIDv7 ids, ``created_at``) fill in the order a
running service would fill them. Every figure of a row is a function of its number and a fixed
build time ``t0`` (pseudo-random values come from ``md5``), so the events of an account can be
generated apart from the account and still agree with it (same id, same dates).

The shape (``--accounts N``, ``--events M``):
- registered accounts (one in five): created over the last 400 days, touched over the last 90;
  converted between the two (``user.anonymous_created``, ``user.conversion_started``,
  ``user.converted``);
- anonymous accounts (four in five): created over the last 90 days; half never came back
  (``updated_at = created_at``), half were touched since, so about a third are older than the
  cull cutoff: the backlog of a first cull. One in a hundred has an unexpired conversion request
  (``pending``, with its setup link), one in a hundred an expired one;
- ``data``: a third ``{}``, the rest from a few dozen bytes to about 4 kB (a cart of 20-60 items);
- events of accounts that no longer exist fill the rest of ``M``: guests created 400 to 41 days
  ago, culled 40 days later (``user.culled``, one event per 1,000 ids), one in fifty merged into
  a registered account instead (``user.merged``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

DAY = 86_400
SPAN_DAYS = 400  # events and registered accounts
ANON_DAYS = 90  # anonymous accounts
GHOST_DAYS = 359  # guests that are gone: created 400 to 41 days ago
CULL_DELAY_DAYS = 40
CULL_BATCH = 1_000
# A real argon2id hash (m=19 MiB, t=2, p=1) of a throwaway password: every registered row
# carries one, so the row is as wide as a real one.
PASSWORD_HASH = (
    "$argon2id$v=19$m=19456,t=2,p=1$Ikk4SXpRZFJoQ0R6d3F0WQ$"  # noqa: S105 (a hash, not a secret)
    "A2vS4E5gk4bY+o4n6UQZ3yF8b7ZxzFJX4h0Zr1n6mWc"
)
# Events per account that exists: anonymous_created for all, two more per registered account,
# conversion_started for the pending and the expired-pending (2 % of anonymous).
EVENTS_PER_ACCOUNT = 1 + 2 * 0.2 + 0.02 * 0.8


def r01(salt: str, g: str) -> str:
    """SQL: a pseudo-random number in [0, 1) fixed by ``salt`` and the row number ``g``."""
    return f"(('x' || substr(md5('{salt}' || {g}), 1, 8))::bit(32)::bigint / 4294967296.0)"


def uuid7(ts: str, seed: str) -> str:
    """SQL: a UUIDv7 whose time is ``ts`` (timestamptz) and whose other bits come from md5."""
    millis = f"substring(int8send((extract(epoch FROM {ts}) * 1000)::bigint) FROM 3)"
    raw = f"overlay(decode(md5({seed}), 'hex') PLACING {millis} FROM 1 FOR 6)"
    # Version 7 (0111 in the high nibble of byte 6), variant 10 (the top bits of byte 8).
    bits = f"set_bit(set_bit(set_bit(set_bit({raw}, 52, 1), 53, 1), 54, 1), 55, 0)"
    return f"encode(set_bit(set_bit({bits}, 71, 1), 70, 0), 'hex')::uuid"


def at(epoch: str) -> str:
    return f"to_timestamp({epoch})"


def data_doc(g: str) -> str:
    """SQL: a profile document of a realistic size for row ``g``."""
    pick = r01("data", g)
    small = (
        "jsonb_build_object('prefs', jsonb_build_object('theme', "
        f"CASE WHEN {g} % 2 = 0 THEN 'dark' ELSE 'light' END, 'lang', 'en'), 'seen', {g} % 1000)"
    )
    medium = (
        f"{small} || jsonb_build_object('cart', jsonb_build_object('items', jsonb_build_array("
        f"jsonb_build_object('sku', md5('a' || {g}), 'qty', 1), "
        f"jsonb_build_object('sku', md5('b' || {g}), 'qty', 2), "
        f"jsonb_build_object('sku', md5('c' || {g}), 'qty', 1))), "
        f"'recent', jsonb_build_array(md5('d' || {g}), md5('e' || {g}), md5('f' || {g})))"
    )
    # 20-60 items of ~75 bytes: 1.5-4.5 kB of text, compressed by TOAST as real carts are.
    large = (
        f"{small} || jsonb_build_object('cart', jsonb_build_object('items', (SELECT jsonb_agg("
        f"jsonb_build_object('sku', md5(i || '-' || {g}), 'qty', i % 5, "
        f"'note', substr(md5({g} || '-' || i), 1, 12))) "
        f"FROM generate_series(1, 20 + ({g} % 41)) AS i)))"
    )
    return (
        f"CASE WHEN {pick} < 0.35 THEN '{{}}'::jsonb WHEN {pick} < 0.75 THEN {small} "
        f"WHEN {pick} < 0.95 THEN {medium} ELSE {large} END"
    )


@dataclass(frozen=True)
class Plan:
    """How many rows of each kind, and when each kind's rows were created."""

    accounts: int
    events: int
    t0: float  # the build's "now", epoch seconds

    @property
    def registered(self) -> int:
        return self.accounts // 5

    @property
    def anonymous(self) -> int:
        return self.accounts - self.registered

    @property
    def ghosts(self) -> int:
        left = self.events - self.account_events
        return max(0, math.floor(left / (1 + 0.02 + 1 / CULL_BATCH)))

    @property
    def account_events(self) -> int:
        return math.ceil(self.accounts * EVENTS_PER_ACCOUNT)

    def range_of(self, count: int, first_day: int, days: int, day: int) -> tuple[int, int]:
        """Row numbers ``[lo, hi)`` of a kind spread evenly over ``days`` from ``first_day``."""
        if not first_day <= day < first_day + days:
            return (0, 0)
        k = day - first_day
        return (count * k // days, count * (k + 1) // days)

    def created(self, count: int, first_day: int, days: int, g: str) -> str:
        """SQL epoch: creation time of row ``g`` of a kind spread over ``days``."""
        start = self.t0 - (SPAN_DAYS - first_day) * DAY
        return f"({start} + ({g} + 0.5) * {days * DAY / max(count, 1)})"

    def culled_blocks(self, day: int) -> tuple[int, int]:
        """Culled-event blocks ``[lo, hi)`` dated in ``day`` (each 40 days after its last guest)."""
        blocks = math.ceil(self.ghosts / CULL_BATCH)
        per_day = self.ghosts / GHOST_DAYS

        def day_of(j: int) -> int:
            last = min((j + 1) * CULL_BATCH, self.ghosts) - 0.5
            return math.floor(last / per_day) + CULL_DELAY_DAYS if per_day else SPAN_DAYS

        lo = next((j for j in range(blocks) if day_of(j) >= day), blocks)
        hi = next((j for j in range(lo, blocks) if day_of(j) > day), blocks)
        return (lo, hi)


def _registered_sql(plan: Plan) -> tuple[str, str]:
    c = plan.created(plan.registered, 0, SPAN_DAYS, "g")
    updated = f"greatest({c}, {plan.t0} - {90 * DAY} * {r01('ru', 'g')})"
    converted = f"({c} + ({updated} - {c}) * {r01('cv', 'g')})"
    uid = uuid7(at(c), "'r' || g")
    users = f"""
INSERT INTO users (id, username, email, is_anonymous, data, password_hash, session_version,
                   created_at, updated_at, converted_at)
SELECT {uid}, NULL, 'user' || g || '@example.org', false, {data_doc("g")}, '{PASSWORD_HASH}', 2,
       {at(c)}, {at(updated)}, {at(converted)}
FROM generate_series($1::bigint, $2::bigint - 1) AS g
"""
    events = f"""
INSERT INTO events (id, type, user_id, payload, created_at)
SELECT {uuid7(at("e.ts"), "e.kind || g")}, e.type, u.id,
       jsonb_build_object('id', u.id) || e.extra, {at("e.ts")}
FROM generate_series($1::bigint, $2::bigint - 1) AS g
CROSS JOIN LATERAL (SELECT {uid} AS id) AS u
CROSS JOIN LATERAL (VALUES
    ('ra', 'user.anonymous_created', {c}, '{{}}'::jsonb),
    ('rs', 'user.conversion_started', greatest({c}, {converted} - 600), '{{}}'::jsonb),
    ('rc', 'user.converted', {converted}, '{{"method": "password"}}'::jsonb)
) AS e(kind, type, ts, extra)
"""
    return users, events


def _anonymous_sql(plan: Plan) -> tuple[str, str, str]:
    first = SPAN_DAYS - ANON_DAYS
    c = plan.created(plan.anonymous, first, ANON_DAYS, "g")
    returned = f"({c} + ({plan.t0} - {c}) * {r01('au', 'g')})"
    touched = f"CASE WHEN {r01('ar', 'g')} < 0.5 THEN {c} ELSE {returned} END"
    # g % 100 = 7: an unexpired conversion request (made in the last day, which touched the row);
    # g % 100 = 8: one that expired a day after it was made.
    pending_until = (
        f"CASE WHEN g % 100 = 7 THEN {plan.t0} + {DAY} * {r01('pu', 'g')} "
        f"WHEN g % 100 = 8 THEN least({touched} + {DAY}, {plan.t0} - 3600) END"
    )
    requested = f"greatest({c}, {pending_until} - {DAY})"
    updated = f"CASE WHEN g % 100 = 7 THEN greatest({touched}, {requested}) ELSE {touched} END"
    uid = uuid7(at(c), "'a' || g")
    users = f"""
INSERT INTO users (id, username, is_anonymous, data, pending_email, pending_until,
                   created_at, updated_at)
SELECT {uid}, 'guest-' || substr(md5('n' || g), 1, 16), true, {data_doc("g")},
       CASE WHEN g % 100 IN (7, 8) THEN 'pending' || g || '@example.net' END,
       {at(pending_until)}, {at(c)}, {at(updated)}
FROM generate_series($1::bigint, $2::bigint - 1) AS g
"""
    tokens = f"""
INSERT INTO link_tokens (token_hash, user_id, purpose, email, created_at, expires_at)
SELECT sha256(('lt' || g)::bytea), {uid}, 'setup', 'pending' || g || '@example.net',
       {at(requested)}, {at(pending_until)}
FROM generate_series($1::bigint, $2::bigint - 1) AS g
WHERE g % 100 IN (7, 8)
"""
    events = f"""
INSERT INTO events (id, type, user_id, payload, created_at)
SELECT {uuid7(at("e.ts"), "e.kind || g")}, e.type, u.id, jsonb_build_object('id', u.id),
       {at("e.ts")}
FROM generate_series($1::bigint, $2::bigint - 1) AS g
CROSS JOIN LATERAL (SELECT {uid} AS id) AS u
CROSS JOIN LATERAL (VALUES
    ('aa', 'user.anonymous_created', {c}),
    ('as', CASE WHEN g % 100 IN (7, 8) THEN 'user.conversion_started' END, {requested})
) AS e(kind, type, ts)
WHERE e.type IS NOT NULL
"""
    return users, tokens, events


def _ghost_sql(plan: Plan) -> tuple[str, str]:
    c = plan.created(plan.ghosts, 0, GHOST_DAYS, "g")

    def ghost_id(g: str) -> str:
        return uuid7(at(plan.created(plan.ghosts, 0, GHOST_DAYS, g)), f"'g' || {g}")

    gid = ghost_id("g")
    r = plan.registered
    into = uuid7(at(plan.created(r, 0, SPAN_DAYS, f"(g % {r})")), f"'r' || (g % {r})")
    merged_at = f"greatest({c} + {10 * DAY} * {r01('gm', 'g')}, {c})"
    events = f"""
INSERT INTO events (id, type, user_id, payload, created_at)
SELECT {uuid7(at("e.ts"), "e.kind || g")}, e.type, e.uid, e.payload, {at("e.ts")}
FROM generate_series($1::bigint, $2::bigint - 1) AS g
CROSS JOIN LATERAL (SELECT {gid} AS id) AS u
CROSS JOIN LATERAL (VALUES
    ('ga', 'user.anonymous_created', u.id, jsonb_build_object('id', u.id), {c}),
    ('gm', CASE WHEN g % 50 = 3 AND {r} > 0 THEN 'user.merged' END, {into},
     jsonb_build_object('from', u.id, 'into', {into}), {merged_at})
) AS e(kind, type, uid, payload, ts)
WHERE e.type IS NOT NULL
"""
    # One user.culled per 1,000 guests (the merged ones are not among them), 40 days after the
    # last of them was created: the cull of a steady service.
    last = f"least((j + 1) * {CULL_BATCH}, {plan.ghosts}) - 1"
    culled_at = (
        f"({plan.created(plan.ghosts, 0, GHOST_DAYS, last)} + {CULL_DELAY_DAYS * DAY} + 3600)"
    )
    culled = f"""
INSERT INTO events (id, type, user_id, payload, created_at)
SELECT {uuid7(at(culled_at), "'gc' || j")}, 'user.culled', NULL,
       jsonb_build_object('ids', (
           SELECT jsonb_agg({ghost_id("gg")})
           FROM generate_series(j * {CULL_BATCH}, {last}) AS gg WHERE gg % 50 <> 3)),
       {at(culled_at)}
FROM generate_series($1::bigint, $2::bigint - 1) AS j
"""
    return events, culled


@dataclass
class BuildResult:
    users: int
    events: int
    link_tokens: int
    insert_seconds: float
    vacuum_seconds: float

    @property
    def rows_per_second(self) -> float:
        return (self.users + self.events) / self.insert_seconds if self.insert_seconds else 0.0


async def build(db_url: str, plan: Plan, log: Callable[[str], None]) -> BuildResult:
    """Fill a freshly migrated database, day by day; then VACUUM ANALYZE."""
    reg_users, reg_events = _registered_sql(plan)
    anon_users, anon_tokens, anon_events = _anonymous_sql(plan)
    ghost_events, culled_events = _ghost_sql(plan)
    conn = await asyncpg.connect(db_url)
    counts = {"users": 0, "events": 0, "link_tokens": 0}

    async def insert(sql: str, span: tuple[int, int], table: str) -> None:
        if span[1] > span[0]:
            status = await conn.execute(sql, span[0], span[1])
            counts[table] += int(status.split()[-1])

    try:
        # Only this connection's commits wait for nobody; a crash loses the build, not the server.
        await conn.execute("SET synchronous_commit = off")
        started = time.perf_counter()
        for day in range(SPAN_DAYS):
            registered = plan.range_of(plan.registered, 0, SPAN_DAYS, day)
            anonymous = plan.range_of(plan.anonymous, SPAN_DAYS - ANON_DAYS, ANON_DAYS, day)
            ghosts = plan.range_of(plan.ghosts, 0, GHOST_DAYS, day)
            await insert(reg_users, registered, "users")
            await insert(anon_users, anonymous, "users")
            await insert(anon_tokens, anonymous, "link_tokens")
            await insert(ghost_events, ghosts, "events")
            await insert(culled_events, plan.culled_blocks(day), "events")
            await insert(reg_events, registered, "events")
            await insert(anon_events, anonymous, "events")
            if day % 40 == 39:
                elapsed = time.perf_counter() - started
                rows = counts["users"] + counts["events"]
                log(
                    f"  day {day + 1}/{SPAN_DAYS}: {counts['users']:,} accounts, "
                    f"{counts['events']:,} events, {rows / elapsed:,.0f} rows/s"
                )
        insert_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for table in ("users", "events", "link_tokens"):
            await conn.execute(f"VACUUM ANALYZE {table}")
        vacuum_seconds = time.perf_counter() - started
    finally:
        await conn.close()
    return BuildResult(
        counts["users"], counts["events"], counts["link_tokens"], insert_seconds, vacuum_seconds
    )


# One session per account (CONTRACT §4: a sign-in is a row of its own), begun when the account
# was made and last refreshed when it was last touched: the hot paths read a session row on every
# request, so the big database must hold as many as a real one would. The refresh tokens are
# hashes of values nobody holds.
_SESSIONS = """
INSERT INTO sessions (user_id, id, created_at, last_used_at, last_used_day, family_hash,
                      live_hashes)
SELECT id, gen_random_uuid(), created_at, updated_at, (updated_at AT TIME ZONE 'UTC')::date,
       sha256(('f' || id::text)::bytea), ARRAY[sha256(('r' || id::text)::bytea)]
FROM users
"""


async def add_sessions(db_url: str, log: Callable[[str], None]) -> tuple[int, float]:
    """A session row for every account (a database built before sessions existed, or a new
    one); the rows and the seconds taken, VACUUM ANALYZE included."""
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("SET synchronous_commit = off")
        started = time.perf_counter()
        status = await conn.execute(_SESSIONS, timeout=None)
        await conn.execute("VACUUM ANALYZE sessions", timeout=None)
        seconds = time.perf_counter() - started
    finally:
        await conn.close()
    rows = int(status.split()[-1])
    log(f"  {rows:,} sessions, one per account, in {seconds:.0f} s")
    return rows, seconds
