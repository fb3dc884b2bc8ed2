"""Stats (``GET /v1/admin/stats``, ``anonid stats``) agree with counts taken directly from the tables."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from app.lifecycle.counts import refresh_counts, refresh_if_due
from app.lifecycle.cull import run_cull
from app.lifecycle.events import record_event
from app.lifecycle.stats import collect_stats
from tests.conftest import AppFactory, client_for, make_settings, running_app
from tests.lifecycle_support import (
    ADMIN_KEY,
    FAR_CUTOFF_DAYS,
    FAR_PAST_DAYS,
    admin_headers,
    insert_guests,
    insert_registered,
    new_guests,
)
from tests.outbox_support import private_engine
from tests.processes import clean_env, run

FUNNEL = {
    "user.anonymous_created": "anonymous_created",
    "user.conversion_started": "conversions_started",
    "user.converted": "converted",
    "user.merged": "merged",
}


@pytest.fixture
async def admin(app_with: AppFactory) -> httpx.AsyncClient:
    _, client = await app_with(admin_api_key=ADMIN_KEY)
    client.headers.update(admin_headers())
    return client


async def _make_activity(engine: AsyncEngine, client: httpx.AsyncClient, database_url: str) -> None:
    """Something of every kind: guests, a pending and an expired request, funnel events, a cull."""
    await new_guests(client, 3)
    pending, expired = await insert_guests(engine, 2)
    await insert_registered(engine)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE users SET pending_email = 'p@example.test', pending_until = "
                "CASE WHEN id = :p THEN now() + interval '1 day' ELSE now() - interval '1 hour' END "
                "WHERE id IN (:p, :e)"
            ),
            {"p": uuid.UUID(pending), "e": uuid.UUID(expired)},
        )
        for event_type in ("user.conversion_started", "user.conversion_started", "user.converted"):
            await record_event(conn, event_type, uuid.UUID(pending), {}, [])
        await record_event(conn, "user.merged", None, {"from": pending, "into": expired}, [])
        # An event from 40 days ago is outside the window and must not count.
        await conn.execute(
            sa.text(
                "INSERT INTO events (id, type, payload, created_at) "
                "VALUES (:id, 'user.converted', '{}', now() - interval '40 days')"
            ),
            {"id": uuid.uuid4()},
        )
    await insert_guests(engine, 3, days_ago=FAR_PAST_DAYS)
    await run_cull(
        engine, make_settings(database_url), older_than_days=FAR_CUTOFF_DAYS, batch_size=2
    )
    await recount(engine)


async def recount(engine: AsyncEngine) -> None:
    """What the worker does every 30 s: stats then read these counts."""
    async with engine.begin() as conn:
        await refresh_counts(conn)


async def _direct_counts(engine: AsyncEngine) -> dict:
    """The stats object computed in Python from raw rows (a second, independent derivation)."""
    async with engine.connect() as conn:
        now = await conn.scalar(sa.text("SELECT now()"))
        users = (
            await conn.execute(
                sa.text(
                    "SELECT is_anonymous, pending_email, pending_until, created_at, updated_at "
                    "FROM users"
                )
            )
        ).all()
        events = (
            await conn.execute(
                sa.text(
                    "SELECT type, payload, created_at FROM events "
                    "WHERE created_at > now() - interval '32 days'"
                )
            )
        ).all()
        outbox = (await conn.execute(sa.text("SELECT sent_at, failed_at FROM outbox"))).all()

    today = now.astimezone(UTC).date()
    days = [today - timedelta(days=i) for i in range(29, -1, -1)]
    per_day: dict[date, dict[str, int]] = defaultdict(
        lambda: dict.fromkeys([*FUNNEL.values(), "culled"], 0)
    )
    for e in events:
        day = e.created_at.astimezone(UTC).date()
        if e.type in FUNNEL:
            per_day[day][FUNNEL[e.type]] += 1
        elif e.type == "user.culled":
            per_day[day]["culled"] += len(e.payload["ids"])
    daily = [{"date": d.isoformat(), **per_day[d]} for d in days]

    month_start = datetime(today.year, today.month, 1, tzinfo=UTC)
    counts = {"anonymous": 0, "pending": 0, "registered": 0}
    mau = {"month": f"{today.year:04d}-{today.month:02d}", "anonymous": 0, "registered": 0}
    for u in users:
        if not u.is_anonymous:
            state = "registered"
        elif u.pending_email and u.pending_until and u.pending_until > now:
            state = "pending"
        else:
            state = "anonymous"
        counts[state] += 1
        if max(u.created_at, u.updated_at) >= month_start:
            mau["anonymous" if u.is_anonymous else "registered"] += 1
    created = sum(d["anonymous_created"] for d in daily)
    converted = sum(d["converted"] for d in daily)
    return {
        "users": counts,
        "daily": daily,
        "conversion_rate_30d": round(converted / created, 4) if created else 0.0,
        "mau": mau,
        "outbox": {
            "pending": sum(1 for o in outbox if o.sent_at is None and o.failed_at is None),
            "failed": sum(1 for o in outbox if o.failed_at is not None),
        },
    }


async def test_stats_agree_with_direct_counts(
    admin: httpx.AsyncClient, client: httpx.AsyncClient, engine: AsyncEngine, database_url: str
) -> None:
    await _make_activity(engine, client, database_url)
    r = await admin.get("/v1/admin/stats")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    stats = r.json()
    assert stats == await _direct_counts(engine)
    today = stats["daily"][-1]
    assert today["conversions_started"] >= 2 and today["converted"] >= 1
    assert today["merged"] >= 1 and today["culled"] >= 3 and stats["users"]["pending"] >= 1


async def test_daily_is_thirty_zero_filled_days_ending_today(admin: httpx.AsyncClient) -> None:
    daily = (await admin.get("/v1/admin/stats")).json()["daily"]
    assert len(daily) == 30
    dates = [date.fromisoformat(d["date"]) for d in daily]
    assert dates == [dates[0] + timedelta(days=i) for i in range(30)]
    assert abs((datetime.now(UTC).date() - dates[-1]).days) <= 1
    for day in daily:
        assert set(day) == {"date", *FUNNEL.values(), "culled"}
        assert all(isinstance(v, int) and v >= 0 for k, v in day.items() if k != "date")


async def test_culled_counts_accounts_not_events(server_url: str) -> None:
    # A database of its own: a culler elsewhere in the run (a worker's start-up cull) would
    # otherwise take some of these rows and change the batch count this test relies on.
    async with private_engine(server_url) as (url, engine):
        async with engine.connect() as conn:
            before = (await collect_stats(conn))["daily"][-1]["culled"]
        await insert_guests(engine, 5, days_ago=FAR_PAST_DAYS)
        result = await run_cull(
            engine, make_settings(url), older_than_days=FAR_CUTOFF_DAYS, batch_size=2
        )
        assert result["batches"] == 3 and result["deleted"] == 5
        async with engine.connect() as conn:
            after = (await collect_stats(conn))["daily"][-1]["culled"]
    assert after - before == 5


async def test_conversion_rate_is_conversions_over_new_guests_in_30_days(
    admin: httpx.AsyncClient, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await new_guests(client, 2)
    async with engine.begin() as conn:
        await record_event(conn, "user.converted", None, {}, [])
    stats = (await admin.get("/v1/admin/stats")).json()
    created = sum(d["anonymous_created"] for d in stats["daily"])
    converted = sum(d["converted"] for d in stats["daily"])
    assert created >= 2 and converted >= 1
    assert stats["conversion_rate_30d"] == round(converted / created, 4)
    assert isinstance(stats["conversion_rate_30d"], float)


async def test_stats_command_prints_the_same_json_as_the_endpoint(
    admin: httpx.AsyncClient, tmp_path: Path, database_url: str
) -> None:
    from_api = (await admin.get("/v1/admin/stats")).json()
    done = await asyncio.to_thread(
        run, ["stats"], tmp_path, clean_env(ANONID_DATABASE_URL=database_url)
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().splitlines()) == 1
    assert json.loads(done.stdout) == from_api


async def _users_and_gauges(url: str) -> tuple[dict, dict, str]:
    """``users`` of the stats, the account gauges of a fresh app's first scrape, and its text."""
    settings = make_settings(url, admin_api_key=ADMIN_KEY)
    async with running_app(settings) as app, client_for(app) as client:
        stats = (await client.get("/v1/admin/stats", headers=admin_headers())).json()
        text = (await client.get("/metrics")).text
    gauges = {
        s.labels["state"]: int(s.value)
        for family in text_string_to_metric_families(text)
        if family.name == "anonid_accounts"
        for s in family.samples
    }
    return stats["users"], gauges, text


async def test_stats_and_metrics_read_the_refreshed_counts_never_older_than_45_seconds(
    server_url: str,
) -> None:
    async with private_engine(server_url) as (url, engine):
        await insert_guests(engine, 3)
        await insert_registered(engine)
        await recount(engine)
        first = {"anonymous": 3, "pending": 0, "registered": 1}
        users, gauges, text = await _users_and_gauges(url)
        assert users == gauges == first
        assert "recounted by the worker every 30 s: at most 60 s old" in text

        # Written since the last recount: not seen until the next one.
        await insert_guests(engine, 2)
        users, gauges, _ = await _users_and_gauges(url)
        assert users == gauges == first
        await recount(engine)
        users, gauges, _ = await _users_and_gauges(url)
        assert users == gauges == {"anonymous": 5, "pending": 0, "registered": 1}

        # No worker has recounted for 45 s: the request counts for itself.
        await insert_guests(engine, 1)
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("UPDATE stats_counts SET refreshed_at = now() - interval '46 seconds'")
            )
        users, gauges, _ = await _users_and_gauges(url)
        assert users == gauges == {"anonymous": 6, "pending": 0, "registered": 1}


async def test_a_fresh_count_row_is_read_without_the_recount_being_planned(
    server_url: str,
) -> None:
    # A recount that is only a never-taken branch of the read is still planned, and at 20
    # million accounts JIT-compiled, on every read (110 ms a scrape): it must be a statement
    # of its own, sent only when the row is stale.
    from app.lifecycle.counts import read_counts

    async with private_engine(server_url) as (_, engine):
        await insert_guests(engine, 2)
        await recount(engine)
        sent: list[str] = []

        def record(conn, cursor, statement, *args) -> None:
            sent.append(statement)

        sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
        try:
            async with engine.connect() as conn:
                fresh = await read_counts(conn)
                assert fresh["anonymous"] == 2
                assert len(sent) == 1 and "count(" not in sent[0]
                await conn.execute(
                    sa.text("UPDATE stats_counts SET refreshed_at = now() - interval '1 hour'")
                )
                sent.clear()
                assert (await read_counts(conn))["anonymous"] == 2
                assert len(sent) == 2 and "count(" in sent[1]
        finally:
            sa.event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_only_one_process_recounts_per_interval(server_url: str) -> None:
    async with private_engine(server_url) as (_, engine):

        async def worker_round() -> bool:
            async with engine.begin() as conn:
                return await refresh_if_due(conn)

        assert await worker_round() is True
        async with engine.connect() as conn:
            first = await conn.scalar(sa.text("SELECT refreshed_at FROM stats_counts"))
        # Another process's round a moment later finds the counts fresh and leaves them.
        assert await worker_round() is False
        async with engine.begin() as conn:
            assert await conn.scalar(sa.text("SELECT refreshed_at FROM stats_counts")) == first
            await conn.execute(
                sa.text("UPDATE stats_counts SET refreshed_at = now() - interval '16 seconds'")
            )
        assert await worker_round() is True
