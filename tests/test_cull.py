"""The cull (CONTRACT §9): exactly the stale anonymous accounts go, in batches, under one lock."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.lifecycle import cull as cull_module
from app.lifecycle.cull import (
    DEFAULT_BATCH_SIZE,
    HEAP_BATCH,
    STALE_BATCH,
    cull_batch,
    run_cull,
    walks_heap,
)
from app.platform.db import CULL_LOCK, create_engine, upgrade_to_head
from tests.conftest import _with_database, client_for, make_settings, running_app
from tests.lifecycle_support import (
    FAR_CUTOFF_DAYS,
    FAR_PAST_DAYS,
    add_email,
    add_link,
    culled_ids_since,
    db_now,
    existing,
    insert_guests,
    insert_registered,
    stale_count,
)
from tests.processes import clean_env, run

RESULT_KEYS = {"cutoff", "matched", "deleted", "batches", "dry_run"}


@pytest.fixture(scope="module")
def settings(database_url: str):
    return make_settings(database_url)


@pytest.fixture(params=["index", "heap"])
def walk(request, monkeypatch) -> str:
    """Run the test once per walk: the partial index (few stale rows) or the heap (a backlog)."""
    monkeypatch.setattr(
        cull_module, "HEAP_WALK_ROWS_PER_PAGE", 0.0 if request.param == "heap" else float("inf")
    )
    return str(request.param)


def test_a_backlog_walks_the_heap_and_a_few_stale_rows_the_index() -> None:
    assert walks_heap(matched=1_000_000, pages=33_000)
    assert walks_heap(matched=50, pages=40)
    assert not walks_heap(matched=300, pages=33_000)  # an hourly cull of a busy service
    assert not walks_heap(matched=0, pages=0)


async def test_cull_deletes_exactly_the_stale_anonymous_accounts(
    engine: AsyncEngine, settings, walk: str, caplog
) -> None:
    stale = await insert_guests(engine, 5, days_ago=FAR_PAST_DAYS)
    recent = await insert_guests(engine, 2, days_ago=FAR_CUTOFF_DAYS - 5)
    fresh = await insert_guests(engine, 2)
    registered, _ = await insert_registered(engine, days_ago=FAR_PAST_DAYS)
    expected = await stale_count(engine, FAR_CUTOFF_DAYS)
    since = await db_now(engine)

    with caplog.at_level(logging.INFO, logger="anonid.cull"):
        result = await run_cull(engine, settings, older_than_days=FAR_CUTOFF_DAYS, batch_size=2)

    assert any(f"({walk} order)" in r.getMessage() for r in caplog.records)
    assert set(result) == RESULT_KEYS
    assert result["dry_run"] is False
    assert result["deleted"] == result["matched"] == expected >= 5
    assert result["batches"] == -(-expected // 2)
    assert await existing(engine, stale) == set()
    assert await existing(engine, [*recent, *fresh, registered]) == {*recent, *fresh, registered}
    cutoff = datetime.fromisoformat(result["cutoff"])
    assert cutoff.tzinfo is not None
    # One user.culled event per batch, naming every deleted account once.
    culled = await culled_ids_since(engine, since)
    assert set(stale) <= set(culled) and len(culled) == len(set(culled)) == expected


async def test_culled_accounts_take_their_links_and_emails_with_them(
    engine: AsyncEngine, settings, walk: str
) -> None:
    (user,) = await insert_guests(engine, 1, days_ago=FAR_PAST_DAYS)
    await add_link(engine, user)
    email_id = await add_email(engine, user, "secret-token-value")

    await run_cull(engine, settings, older_than_days=FAR_CUTOFF_DAYS)

    async with engine.connect() as conn:
        links = await conn.scalar(
            sa.text("SELECT count(*) FROM link_tokens WHERE user_id = :u"), {"u": uuid.UUID(user)}
        )
        mails = await conn.scalar(
            sa.text("SELECT count(*) FROM outbox WHERE id = :i"), {"i": email_id}
        )
    assert (links, mails) == (0, 0)


async def test_dry_run_counts_without_deleting(engine: AsyncEngine, settings) -> None:
    stale = await insert_guests(engine, 3, days_ago=FAR_PAST_DAYS)
    expected = await stale_count(engine, FAR_CUTOFF_DAYS)

    result = await run_cull(engine, settings, dry_run=True, older_than_days=FAR_CUTOFF_DAYS)

    assert result["dry_run"] is True
    assert result["matched"] == expected >= 3
    assert result["deleted"] == result["batches"] == 0
    assert await existing(engine, stale) == set(stale)
    await run_cull(engine, settings, older_than_days=FAR_CUTOFF_DAYS)  # leave nothing behind


async def test_account_touched_while_its_batch_is_selected_is_not_deleted(
    engine: AsyncEngine, settings, walk: str
) -> None:
    touched, other = await insert_guests(engine, 2, days_ago=FAR_PAST_DAYS)
    # A request is touching `touched` right now: its UPDATE holds the row lock, not yet committed.
    async with engine.connect() as request_conn:
        await request_conn.execute(
            sa.text("UPDATE users SET updated_at = now() WHERE id = :id"),
            {"id": uuid.UUID(touched)},
        )
        result = await run_cull(engine, settings, older_than_days=FAR_CUTOFF_DAYS, batch_size=1)
        await request_conn.commit()

    assert result["deleted"] >= 1
    assert await existing(engine, [touched, other]) == {touched}
    # Once committed the touch makes it fresh, so the next cull keeps it as well.
    await run_cull(engine, settings, older_than_days=FAR_CUTOFF_DAYS)
    assert await existing(engine, [touched]) == {touched}


async def test_row_locked_by_another_connection_is_skipped_not_waited_for(
    engine: AsyncEngine, settings, walk: str
) -> None:
    locked, free = await insert_guests(engine, 2, days_ago=FAR_PAST_DAYS)
    async with engine.connect() as holder:
        await holder.execute(
            sa.text("SELECT 1 FROM users WHERE id = :id FOR UPDATE"), {"id": uuid.UUID(locked)}
        )
        await run_cull(engine, settings, older_than_days=FAR_CUTOFF_DAYS)
        assert await existing(engine, [locked, free]) == {locked}
        await holder.rollback()
    # The lock was only a read: the account is still stale and goes in the next cull.
    await run_cull(engine, settings, older_than_days=FAR_CUTOFF_DAYS)
    assert await existing(engine, [locked]) == set()


async def test_two_concurrent_culls_delete_each_row_once(
    engine: AsyncEngine, settings, walk: str
) -> None:
    stale = await insert_guests(engine, 40, days_ago=FAR_PAST_DAYS)
    expected = await stale_count(engine, FAR_CUTOFF_DAYS)
    since = await db_now(engine)
    other = create_engine(settings.database_url, pool_size=2)  # as if another process
    try:
        results = await asyncio.gather(
            run_cull(engine, settings, older_than_days=FAR_CUTOFF_DAYS, batch_size=3),
            run_cull(other, settings, older_than_days=FAR_CUTOFF_DAYS, batch_size=3),
        )
    finally:
        await other.dispose()

    assert sum(r["deleted"] for r in results) == expected
    assert await existing(engine, stale) == set()
    culled = Counter(await culled_ids_since(engine, since))
    assert set(stale) <= set(culled) and max(culled.values()) == 1


async def test_overlapping_batches_without_the_lock_take_disjoint_rows(
    engine: AsyncEngine, settings
) -> None:
    # Even two batches in flight at once (the advisory lock aside) never take the same row.
    await insert_guests(engine, 10, days_ago=FAR_PAST_DAYS)
    async with engine.connect() as c:
        cutoff = await c.scalar(
            sa.text("SELECT now() - make_interval(days => :d)"), {"d": FAR_CUTOFF_DAYS}
        )
    async with engine.connect() as first, engine.connect() as second:
        a = await cull_batch(first, cutoff, 4, [])
        b = await cull_batch(second, cutoff, 4, [])  # runs while `first` holds its rows
        await first.commit()
        await second.commit()
    assert len(a) == len(b) == 4 and not set(a) & set(b)
    await run_cull(engine, settings, older_than_days=FAR_CUTOFF_DAYS)


async def test_second_culler_returns_at_once_and_logs_why(
    engine: AsyncEngine, settings, caplog: pytest.LogCaptureFixture
) -> None:
    stale = await insert_guests(engine, 2, days_ago=FAR_PAST_DAYS)
    async with engine.connect() as holder:
        assert await holder.scalar(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": CULL_LOCK})
        await holder.commit()
        with caplog.at_level(logging.INFO, logger="anonid.cull"):
            result = await run_cull(engine, settings, older_than_days=FAR_CUTOFF_DAYS)
        await holder.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": CULL_LOCK})
        await holder.commit()

    assert result["deleted"] == 0 and result["batches"] == 0
    assert any("another culler" in r.getMessage() for r in caplog.records)
    assert await existing(engine, stale) == set(stale)
    assert (await run_cull(engine, settings, older_than_days=FAR_CUTOFF_DAYS))["deleted"] >= 2


async def test_a_cancelled_cull_leaves_the_lock_free(engine: AsyncEngine, settings) -> None:
    stale = await insert_guests(engine, 3, days_ago=FAR_PAST_DAYS)
    held = sa.text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    async with engine.connect() as blocker:
        # The batch's event insert waits on this table lock, so the cull is mid-batch when cancelled.
        await blocker.execute(sa.text("LOCK TABLE events IN EXCLUSIVE MODE"))
        task = asyncio.create_task(run_cull(engine, settings, older_than_days=FAR_CUTOFF_DAYS))
        for _ in range(200):
            async with engine.connect() as probe:
                if await probe.scalar(held):
                    break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await blocker.rollback()

    async with engine.connect() as probe:
        assert await probe.scalar(held) == 0
    assert await existing(engine, stale) == set(stale)  # the interrupted batch rolled back
    result = await run_cull(engine, settings, older_than_days=FAR_CUTOFF_DAYS)
    assert result["deleted"] >= 3 and await existing(engine, stale) == set()


async def test_cull_defaults_to_cull_after_days(engine: AsyncEngine, database_url: str) -> None:
    settings = make_settings(database_url, cull_after_days=FAR_CUTOFF_DAYS)
    stale = await insert_guests(engine, 1, days_ago=FAR_PAST_DAYS)
    result = await run_cull(engine, settings)
    async with engine.connect() as c:
        age = await c.scalar(
            sa.text("SELECT now() - CAST(:c AS timestamptz)"),
            {"c": datetime.fromisoformat(result["cutoff"])},
        )
    assert abs(age.days - FAR_CUTOFF_DAYS) <= 1
    assert await existing(engine, stale) == set()


async def test_cull_command_prints_one_json_object(
    tmp_path: Path, database_url: str, engine: AsyncEngine
) -> None:
    stale = await insert_guests(engine, 3, days_ago=FAR_PAST_DAYS)
    env = clean_env(ANONID_DATABASE_URL=database_url)
    args = ["cull", "--older-than-days", str(FAR_CUTOFF_DAYS), "--batch-size", "2"]

    dry = await asyncio.to_thread(run, [*args, "--dry-run"], tmp_path, env)
    assert dry.returncode == 0, dry.stderr
    dry_result = json.loads(dry.stdout)
    assert set(dry_result) == RESULT_KEYS and dry_result["dry_run"] is True
    assert dry_result["matched"] >= 3 and dry_result["deleted"] == 0
    assert await existing(engine, stale) == set(stale)

    done = await asyncio.to_thread(run, args, tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().splitlines()) == 1
    result = json.loads(done.stdout)
    assert set(result) == RESULT_KEYS and result["dry_run"] is False
    assert result["deleted"] == dry_result["matched"] and result["batches"] >= 2
    assert await existing(engine, stale) == set()


async def test_big_cull_uses_the_partial_index_and_never_fails_a_request(server_url: str) -> None:
    """100,000 stale accounts among 200,000, culled while guests keep arriving (own database)."""
    name = "anonid_bigcull_" + secrets.token_hex(4)
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = _with_database(server_url, name)
    try:
        await asyncio.to_thread(upgrade_to_head, url)
        settings = make_settings(url, anonymous_rate_limit="1000000/minute")
        big = create_engine(url, pool_size=4)
        try:
            await _big_cull(big, settings)
        finally:
            await big.dispose()
    finally:
        admin = await asyncpg.connect(server_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _big_cull(engine: AsyncEngine, settings) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO users (id, username, is_anonymous, created_at, updated_at) "
                "SELECT gen_random_uuid(), 'bulk-' || g, true, "
                "now() - make_interval(days => CASE WHEN g % 2 = 0 THEN 100 ELSE 1 END), "
                "now() - make_interval(days => CASE WHEN g % 2 = 0 THEN 100 ELSE 1 END) "
                "FROM generate_series(1, 200000) AS g"
            )
        )
    async with engine.connect() as conn:
        await conn.execute(sa.text("ANALYZE users"))
        await conn.commit()
        cutoff = await conn.scalar(sa.text("SELECT now() - interval '40 days'"))
        plan = "\n".join(
            (
                await conn.execute(
                    sa.text("EXPLAIN " + STALE_BATCH.text),
                    {"cutoff": cutoff, "n": 1000, "after": None},
                )
            )
            .scalars()
            .all()
        )
    assert "ix_users_anonymous_updated_at" in plan, plan
    async with engine.connect() as conn:
        heap_plan = "\n".join(
            (
                await conn.execute(
                    sa.text("EXPLAIN " + HEAP_BATCH.text),
                    {"cutoff": cutoff, "n": 1000, "after_tid": (0, 0), "end_tid": (4000, 0)},
                )
            )
            .scalars()
            .all()
        )
    # A backlog is walked in physical order, each page once, not by a sequential scan per batch.
    assert "Tid Range Scan" in heap_plan, heap_plan

    statuses: list[int] = []
    created: list[str] = []
    async with running_app(settings) as app:
        cull = asyncio.create_task(run_cull(engine, settings))

        async def visitor() -> None:
            async with client_for(app) as client:
                while not cull.done():
                    try:
                        r = await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})
                    except httpx.HTTPError:
                        statuses.append(-1)
                        continue
                    statuses.append(r.status_code)
                    if r.status_code == 201:
                        created.append(r.json()["user"]["id"])

        await asyncio.gather(visitor(), visitor(), cull)
        result = cull.result()

    assert statuses and set(statuses) == {201}, Counter(statuses)
    assert result["matched"] == result["deleted"] == 100_000
    assert result["batches"] == -(-100_000 // DEFAULT_BATCH_SIZE)
    assert await existing(engine, created) == set(created)
    async with engine.connect() as conn:
        left = await conn.scalar(sa.text("SELECT count(*) FROM users WHERE is_anonymous"))
    assert left == 100_000 + len(created)


async def test_each_culled_event_names_exactly_the_ids_its_batch_deleted(
    engine: AsyncEngine, settings
) -> None:
    locked, *free = await insert_guests(engine, 4, days_ago=FAR_PAST_DAYS)
    async with engine.connect() as c:
        cutoff = await c.scalar(
            sa.text("SELECT now() - make_interval(days => :d)"), {"d": FAR_CUTOFF_DAYS}
        )
    async with engine.connect() as holder, engine.connect() as conn:
        await holder.execute(
            sa.text("SELECT 1 FROM users WHERE id = :id FOR UPDATE"), {"id": uuid.UUID(locked)}
        )
        since = await db_now(engine)
        batches = []
        while ids := await cull_batch(conn, cutoff, 2, ["http://hook.example/a"]):
            await conn.commit()
            batches.append(ids)
        await conn.commit()
        await holder.rollback()
        events = (
            await conn.execute(
                sa.text(
                    "SELECT id, payload FROM events WHERE type = 'user.culled' "
                    "AND created_at >= :since ORDER BY created_at"
                ),
                {"since": since},
            )
        ).all()
        hooks = (
            await conn.execute(
                sa.text(
                    "SELECT payload FROM outbox WHERE kind = 'webhook' "
                    "AND payload ->> 'webhook_id' = ANY(CAST(:ids AS text[]))"
                ),
                {"ids": [str(e.id) for e in events]},
            )
        ).all()

    # One event per non-empty batch, holding that batch's deleted ids and nothing else.
    assert sorted(sorted(e.payload["ids"]) for e in events) == sorted(sorted(b) for b in batches)
    deleted = {i for b in batches for i in b}
    assert set(free) <= deleted and locked not in deleted
    assert await existing(engine, [locked, *free]) == {locked}
    # Each event queued one webhook delivery per configured URL, carrying the same ids.
    assert len(hooks) == len(events)
    assert {h.payload["url"] for h in hooks} == {"http://hook.example/a"}
    assert sorted(sorted(h.payload["body"]["data"]["ids"]) for h in hooks) == sorted(
        sorted(b) for b in batches
    )
    await run_cull(engine, settings, older_than_days=FAR_CUTOFF_DAYS)


async def test_an_empty_batch_writes_no_event(engine: AsyncEngine, settings) -> None:
    await run_cull(engine, settings, older_than_days=FAR_CUTOFF_DAYS)  # nothing stale is left
    since = await db_now(engine)
    async with engine.connect() as conn:
        cutoff = await conn.scalar(
            sa.text("SELECT now() - make_interval(days => :d)"), {"d": FAR_CUTOFF_DAYS}
        )
        assert await cull_batch(conn, cutoff, 10, ["http://hook.example/a"]) == []
        await conn.commit()
    assert await culled_ids_since(engine, since) == []


async def test_rows_sharing_updated_at_across_a_batch_boundary_are_all_culled(
    engine: AsyncEngine, settings, walk: str
) -> None:
    # insert_guests gives every row of one call the same updated_at; batches of 2 split them, and
    # each batch resumes the index scan at the previous batch's last updated_at.
    stale = await insert_guests(engine, 7, days_ago=FAR_PAST_DAYS)
    since = await db_now(engine)

    result = await run_cull(engine, settings, older_than_days=FAR_CUTOFF_DAYS, batch_size=2)

    assert result["deleted"] >= 7
    assert await existing(engine, stale) == set()
    assert set(stale) <= set(await culled_ids_since(engine, since))


async def test_the_cull_rests_after_each_full_batch_as_long_as_the_batch_took(
    engine: AsyncEngine, settings, walk: str, monkeypatch
) -> None:
    # A backlog culled flat out takes a whole core and doubles the p99 of live requests: after
    # every full batch the culler sleeps PAUSE_RATIO times the batch's duration (no sleep after
    # the last, short batch: the run is over).
    rests: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded(seconds: float) -> None:
        rests.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(cull_module.asyncio, "sleep", recorded)
    stale = await insert_guests(engine, 7, days_ago=FAR_PAST_DAYS)

    result = await run_cull(engine, settings, older_than_days=FAR_CUTOFF_DAYS, batch_size=2)

    assert await existing(engine, stale) == set()
    full_batches = result["deleted"] // 2
    assert len(rests) == full_batches >= 3
    assert all(rest > 0 for rest in rests)
