"""Bounded growth: retention removes exactly the expired rows, and stats keep the days they report.

Each test has a database of its own: retention and the rollup act on whole tables, so rows other
tests left behind would change what is removed or rolled up.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.lifecycle.events import record_event
from app.lifecycle.rollup import roll_up
from app.outbox.retention import remove_expired
from app.settings import Settings
from tests.conftest import client_for, make_settings, running_app
from tests.lifecycle_support import ADMIN_KEY, admin_headers, new_guests
from tests.outbox_support import private_engine, running_worker, until


@pytest.fixture
async def own(server_url: str) -> AsyncIterator[tuple[str, AsyncEngine]]:
    async with private_engine(server_url) as pair:
        yield pair


@pytest.fixture
def own_url(own: tuple[str, AsyncEngine]) -> str:
    return own[0]


@pytest.fixture
def own_engine(own: tuple[str, AsyncEngine]) -> AsyncEngine:
    return own[1]


@asynccontextmanager
async def admin_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app on these settings, and a client that carries the admin key."""
    async with running_app(settings) as app, client_for(app) as client:
        client.headers.update(admin_headers())
        yield client


async def _db_now(engine: AsyncEngine) -> datetime:
    async with engine.connect() as conn:
        return await conn.scalar(sa.text("SELECT now()"))


async def _today(engine: AsyncEngine) -> date:
    return (await _db_now(engine)).astimezone(UTC).date()


async def _rolled(engine: AsyncEngine) -> dict[date, int]:
    """``anonymous_created`` of every row of daily_stats."""
    async with engine.connect() as conn:
        rows = await conn.execute(sa.text("SELECT day, anonymous_created FROM daily_stats"))
        return {row.day: row.anonymous_created for row in rows}


def _noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


async def _stats(client: httpx.AsyncClient, days: int) -> dict[str, dict[str, int]]:
    r = await client.get(f"/v1/admin/stats?days={days}")
    assert r.status_code == 200, r.text
    return {d.pop("date"): d for d in r.json()["daily"]}


def _funnel(*, created: int) -> dict[str, int]:
    """A day's figures: ``created`` guests plus one event of each other kind (two culled)."""
    return {
        "anonymous_created": created,
        "conversions_started": 1,
        "converted": 1,
        "merged": 1,
        "culled": 2,
    }


async def _move_events(engine: AsyncEngine, ids: list[uuid.UUID], when: datetime) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE events SET created_at = :t WHERE id = ANY(CAST(:ids AS uuid[]))"),
            {"t": when, "ids": ids},
        )


async def _funnel_events(engine: AsyncEngine, guests: list[str]) -> list[uuid.UUID]:
    """The guests' own user.anonymous_created events plus one of each other funnel type."""
    async with engine.begin() as conn:
        ids = list(
            await conn.scalars(
                sa.text("SELECT id FROM events WHERE user_id = ANY(CAST(:u AS uuid[]))"),
                {"u": [uuid.UUID(g) for g in guests]},
            )
        )
        first = uuid.UUID(guests[0])
        for event_type in ("user.conversion_started", "user.converted"):
            ids.append(await record_event(conn, event_type, first, {}, []))
        others = [str(uuid.uuid4()), str(uuid.uuid4())]
        ids.append(await record_event(conn, "user.merged", None, {"from": others[0]}, []))
        ids.append(await record_event(conn, "user.culled", None, {"ids": others}, []))
    return ids


async def _outbox_row(engine: AsyncEngine, **ages: timedelta) -> int:
    """A webhook outbox row created 40 days ago, with ``sent_at``/``failed_at`` that long ago."""
    columns = {name: f"now() - make_interval(secs => :{name})" for name in ages}
    async with engine.begin() as conn:
        return int(
            await conn.scalar(
                sa.text(
                    "INSERT INTO outbox (kind, payload, created_at"
                    + "".join(f", {c}" for c in columns)
                    + ") VALUES ('webhook', '{}', now() - interval '40 days'"
                    + "".join(f", {v}" for v in columns.values())
                    + ") RETURNING id"
                ),
                {name: age.total_seconds() for name, age in ages.items()},
            )
        )


async def _link(
    engine: AsyncEngine, user_id: str, *, expired: timedelta | None, used: timedelta | None
) -> tuple[str, bytes]:
    """A setup link that expired (or expires, if negative) and was used that long ago."""
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).digest()
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO link_tokens (token_hash, user_id, purpose, email, created_at,"
                " expires_at, used_at) VALUES (:h, :u, 'setup', 'link@example.test',"
                " now() - interval '60 days', now() - make_interval(secs => :e),"
                " now() - make_interval(secs => CAST(:used AS double precision)))"
            ),
            {
                "h": digest,
                "u": uuid.UUID(user_id),
                "e": (expired or timedelta(days=-1)).total_seconds(),
                "used": None if used is None else used.total_seconds(),
            },
        )
    return token, digest


async def _flow(engine: AsyncEngine, expires_in: timedelta) -> bytes:
    """An oauth_flows row (a provider sign-in in flight) expiring ``expires_in`` from now."""
    digest = hashlib.sha256(secrets.token_bytes(16)).digest()
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO oauth_flows (state_hash, browser_hash, provider, code_verifier, "
                "nonce, return_to, expires_at) VALUES (:h, :h, 'op', 'v', 'n', 'https://x.test/', "
                "now() + make_interval(secs => :s))"
            ),
            {"h": digest, "s": expires_in.total_seconds()},
        )
    return digest


async def _spent_challenge(engine: AsyncEngine, expires_in: timedelta) -> bytes:
    """A spent_challenges row (a solution that made a guest) expiring ``expires_in`` from now."""
    challenge = hashlib.sha256(secrets.token_bytes(16)).digest()
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO spent_challenges (challenge, expires_at) "
                "VALUES (:c, now() + make_interval(secs => :s))"
            ),
            {"c": challenge, "s": expires_in.total_seconds()},
        )
    return challenge


async def _passkey_challenge(engine: AsyncEngine, expires_in: timedelta) -> bytes:
    """A webauthn_challenges row (a passkey sign-in in flight) expiring ``expires_in`` from now."""
    challenge = secrets.token_bytes(64)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO webauthn_challenges (challenge, purpose, browser_hash, client_hash, "
                "expires_at) VALUES (:c, 'login', :c, :c, now() + make_interval(secs => :s))"
            ),
            {"c": challenge, "s": expires_in.total_seconds()},
        )
    return challenge


async def _left(engine: AsyncEngine, table: str, key: str, values: list) -> set:
    async with engine.connect() as conn:
        return set(
            await conn.scalars(
                sa.text(f"SELECT {key} FROM {table} WHERE {key} = ANY(:v)"), {"v": values}
            )
        )


async def test_retention_removes_exactly_the_expired_rows_and_stats_keep_their_days(
    own_url: str, own_engine: AsyncEngine
) -> None:
    settings = make_settings(
        own_url, admin_api_key=ADMIN_KEY, event_retention_days=3, outbox_retention_days=7
    )
    async with admin_client(settings) as client:
        guests = await new_guests(client, 4)
        today = await _today(own_engine)
        old_day, kept_day = today - timedelta(days=5), today - timedelta(days=2)
        old = await _funnel_events(own_engine, guests[:3])
        kept = await _funnel_events(own_engine, guests[3:])
        await _move_events(own_engine, old, _noon(old_day))
        await _move_events(own_engine, kept, _noon(kept_day))

        outbox = {
            "delivered_old": await _outbox_row(own_engine, sent_at=timedelta(days=8)),
            "delivered_recent": await _outbox_row(own_engine, sent_at=timedelta(days=6)),
            "failed_old": await _outbox_row(own_engine, failed_at=timedelta(days=31)),
            "failed_recent": await _outbox_row(own_engine, failed_at=timedelta(days=29)),
            "pending_for_long": await _outbox_row(own_engine),
        }
        day = timedelta(days=1)
        owner = guests[3]
        links = {
            "used_long_ago": await _link(own_engine, owner, expired=7 * day, used=8 * day),
            "expired_long_ago": await _link(own_engine, owner, expired=8 * day, used=None),
            "used_just_now": await _link(
                own_engine, owner, expired=-day, used=timedelta(minutes=1)
            ),
            "expired_recently": await _link(own_engine, owner, expired=6 * day, used=None),
            "live": await _link(own_engine, owner, expired=None, used=None),
        }
        flows = {
            "expired": await _flow(own_engine, -timedelta(minutes=1)),
            "expired_long_ago": await _flow(own_engine, -day),
            "live": await _flow(own_engine, timedelta(minutes=5)),
        }
        challenges = {
            "expired": await _spent_challenge(own_engine, -timedelta(seconds=1)),
            "expired_long_ago": await _spent_challenge(own_engine, -timedelta(days=1)),
            "live": await _spent_challenge(own_engine, timedelta(minutes=5)),
        }
        passkey_challenges = {
            "expired": await _passkey_challenge(own_engine, -timedelta(seconds=1)),
            "expired_long_ago": await _passkey_challenge(own_engine, -day),
            "expired_earlier": await _passkey_challenge(own_engine, -timedelta(minutes=3)),
            "live": await _passkey_challenge(own_engine, timedelta(minutes=4)),
        }
        before = await _stats(client, 10)
        assert before[old_day.isoformat()] == _funnel(created=3)

        removed = await remove_expired(own_engine, settings, batch_size=2)

        assert removed == {
            "events": len(old),
            "outbox_delivered": 1,
            "outbox_failed": 1,
            "link_tokens": 2,
            "oauth_flows": 2,
            "webauthn_challenges": 3,
            "sessions": 0,  # the guests' sessions are alive (tests/test_sessions.py)
            "challenges": 2,
        }
        assert await _left(
            own_engine, "spent_challenges", "challenge", list(challenges.values())
        ) == {challenges["live"]}
        assert await _left(own_engine, "oauth_flows", "state_hash", list(flows.values())) == {
            flows["live"]
        }
        left = await _left(
            own_engine, "webauthn_challenges", "challenge", list(passkey_challenges.values())
        )
        assert left == {passkey_challenges["live"]}
        assert await _left(own_engine, "events", "id", old) == set()
        assert await _left(own_engine, "events", "id", kept) == set(kept)
        assert await _left(own_engine, "outbox", "id", list(outbox.values())) == {
            outbox["delivered_recent"],
            outbox["failed_recent"],
            outbox["pending_for_long"],
        }
        digests = {name: digest for name, (_, digest) in links.items()}
        assert await _left(own_engine, "link_tokens", "token_hash", list(digests.values())) == {
            digests["used_just_now"],
            digests["expired_recently"],
            digests["live"],
        }
        # Within the grace, a spent or expired link still answers as such, not as unknown.
        r = await client.post(
            "/v1/password-setup",
            json={"token": links["expired_recently"][0], "password": "a long passphrase 9"},
        )
        assert r.status_code == 410 and r.json()["error"] == "token_expired"

        after = await _stats(client, 10)
        assert after == before
        assert after[kept_day.isoformat()]["anonymous_created"] == 1
        # A second run finds nothing more to remove.
        assert set((await remove_expired(own_engine, settings)).values()) == {0}
        assert await _stats(client, 10) == before


async def test_rollup_is_idempotent_and_splits_days_at_utc_midnight(
    own_url: str, own_engine: AsyncEngine
) -> None:
    settings = make_settings(own_url, admin_api_key=ADMIN_KEY)
    async with admin_client(settings) as client:
        guests = await new_guests(client, 3)
        today = await _today(own_engine)
        midnight = datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(days=3)
        # A transaction left open from here holds the rollup's horizon back: every event
        # recorded from now on waits for a later run, unless it is moved into the past.
        blocker = await own_engine.connect()
        await blocker.begin()
        await blocker.execute(sa.text("SELECT 1"))
        ids = await _funnel_events(own_engine, guests)
        created = ids[:3]  # the guests' own user.anonymous_created events
        await _move_events(own_engine, created[:1], midnight - timedelta(microseconds=1))
        await _move_events(own_engine, created[1:], midnight)
        before = await _stats(client, 5)
        last_evening, next_day = (midnight - timedelta(days=1)).date(), midnight.date()
        assert before[last_evening.isoformat()]["anonymous_created"] == 1
        assert before[next_day.isoformat()]["anonymous_created"] == 2

        # A fourth guest's event 20 minutes ago: before the horizon, so rolled up (today, or
        # yesterday in the first minutes of a UTC day).
        recent = (await _funnel_events(own_engine, await new_guests(client, 1)))[0]
        recent_at = (await _db_now(own_engine)) - timedelta(minutes=20)
        await _move_events(own_engine, [recent], recent_at)
        before = await _stats(client, 5)

        async with own_engine.begin() as conn:
            written = await roll_up(conn)
        first = await _rolled(own_engine)
        async with own_engine.begin() as conn:
            await roll_up(conn)
        # Every reportable day has a row (zeros included); a second run counts nothing twice.
        assert written >= 399 and len(first) >= 399
        assert await _rolled(own_engine) == first
        assert first[last_evening] == 1 and first[next_day] == 2
        assert first[recent_at.astimezone(UTC).date()] == 1
        # Events after the horizon (the other funnel events, recorded while the blocker was
        # open) wait for a later run.
        assert sum(first.values()) == 4
        assert await _stats(client, 5) == before
        await blocker.rollback()
        await blocker.close()

        # Closed days are read from daily_stats now: the events themselves are no longer needed.
        async with own_engine.begin() as conn:
            await conn.execute(
                sa.text("DELETE FROM events WHERE id = ANY(CAST(:ids AS uuid[]))"),
                {"ids": [*created, recent]},
            )
        assert await _stats(client, 5) == before


async def test_events_of_a_transaction_open_during_the_rollup_count_once_it_commits(
    own_url: str, own_engine: AsyncEngine
) -> None:
    # The rollup reaches the start of the oldest open transaction, not now(): an event stamped
    # now() by a transaction that commits after the rollup must land in a range not yet rolled.
    settings = make_settings(own_url, admin_api_key=ADMIN_KEY)
    async with admin_client(settings) as client:
        async with own_engine.begin() as conn:
            await roll_up(conn)
        today = (await _today(own_engine)).isoformat()
        before = (await _stats(client, 1))[today]["anonymous_created"]
        async with own_engine.connect() as slow:
            await slow.begin()
            await record_event(slow, "user.anonymous_created", None, {}, [])
            await asyncio.sleep(1.2)  # past the horizon's one-second margin
            async with own_engine.begin() as conn:
                await roll_up(conn)
            await slow.commit()
        assert (await _stats(client, 1))[today]["anonymous_created"] == before + 1
        await asyncio.sleep(1.2)  # the transaction is over: the next rollup takes its event in
        async with own_engine.begin() as conn:
            await roll_up(conn)
        assert (await _rolled(own_engine))[date.fromisoformat(today)] == before + 1
        assert (await _stats(client, 1))[today]["anonymous_created"] == before + 1


async def test_events_aged_or_backdated_into_rolled_up_days_count_in_those_days(
    own_url: str, own_engine: AsyncEngine
) -> None:
    settings = make_settings(own_url, admin_api_key=ADMIN_KEY, event_retention_days=3)
    async with admin_client(settings) as client:
        async with own_engine.begin() as conn:
            await roll_up(conn)  # every reportable day has its row before anything moves
        guests = await new_guests(client, 3)
        ids = await _funnel_events(own_engine, guests)
        today = await _today(own_engine)
        five, six = today - timedelta(days=5), today - timedelta(days=6)
        fresh = await _stats(client, 10)
        assert fresh[today.isoformat()]["anonymous_created"] >= 3

        await _move_events(own_engine, ids, _noon(five))
        await _move_events(own_engine, ids[:1], _noon(six))
        async with own_engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO events (id, type, created_at)"
                    " VALUES (gen_random_uuid(), 'user.converted', :t)"
                ),
                {"t": _noon(six)},
            )
        aged = await _stats(client, 10)
        assert aged[five.isoformat()] == _funnel(created=2)
        assert aged[six.isoformat()]["anonymous_created"] == 1
        assert aged[six.isoformat()]["converted"] == 1
        today_before = fresh[today.isoformat()]["anonymous_created"]
        assert aged[today.isoformat()]["anonymous_created"] == today_before - 3

        removed = await remove_expired(own_engine, settings)
        assert removed["events"] == len(ids) + 1
        assert await _stats(client, 10) == aged


async def test_the_worker_rolls_up_removes_and_recounts_at_start(
    own_url: str, own_engine: AsyncEngine
) -> None:
    settings = make_settings(own_url, admin_api_key=ADMIN_KEY, event_retention_days=1)
    async with admin_client(settings) as client:
        guests = await new_guests(client, 2)
        old = await _funnel_events(own_engine, guests)
        old_day = await _today(own_engine) - timedelta(days=4)
        await _move_events(own_engine, old, _noon(old_day))
        delivered = await _outbox_row(own_engine, sent_at=timedelta(days=30))
        before = await _stats(client, 7)
        assert before[old_day.isoformat()]["anonymous_created"] == 2

        async def housekept() -> bool:
            async with own_engine.connect() as conn:
                counted = await conn.scalar(sa.text("SELECT count(*) FROM stats_counts"))
            gone = not await _left(own_engine, "events", "id", old)
            return (
                bool(counted) and gone and not await _left(own_engine, "outbox", "id", [delivered])
            )

        # cull off: housekeeping runs whatever ANONID_CULL_INTERVAL_MINUTES is.
        async with running_worker(own_engine, settings, cull=False):
            await until(housekept)
        assert await _stats(client, 7) == before
        async with own_engine.connect() as conn:
            sealed = await conn.scalar(
                sa.text("SELECT sealed FROM daily_stats WHERE day = :d"), {"d": old_day}
            )
        assert sealed is True


async def test_concurrent_retention_runs_remove_each_row_once(
    own_url: str, own_engine: AsyncEngine
) -> None:
    settings: Settings = make_settings(own_url, event_retention_days=1)
    async with own_engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO events (id, type, created_at)"
                " SELECT gen_random_uuid(), 'user.anonymous_created', now() - interval '3 days'"
                " FROM generate_series(1, 500)"
            )
        )
    results = await asyncio.gather(
        *(remove_expired(own_engine, settings, batch_size=7) for _ in range(3))
    )
    assert sum(r["events"] for r in results) == 500
    async with own_engine.connect() as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM events")) == 0
