"""anonid behind a transaction-pooling PgBouncer (CONTRACT §12), with and without the direct URL.

Real processes (``anonid migrate``, ``serve``, ``worker``, ``cull``) reach PostgreSQL through a
real PgBouncer 1.18 in transaction mode (``tests.pgbouncer_support``), where each transaction may
run on another server connection: a named prepared statement, a session ``SET``, a ``LISTEN`` or a
session advisory lock through it would break or leak.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import psutil
import pytest

from app.lifecycle.cull import run_cull
from app.platform.db import CULL_LOCK, async_url, create_engine, resolve_topology
from tests.conftest import make_settings
from tests.fault_support import PASSWORD, Worker, base_env, fetch, new_guest, serve
from tests.mailserver import MailServer, links_in
from tests.pgbouncer_support import Bouncer, pgbouncer, with_database
from tests.processes import free_port, run

BEARER = {"X-Anonid-Token": "bearer"}
PORTS = (18600, 18700)


@pytest.fixture(scope="module")
def bouncer(server_url: str) -> Iterator[Bouncer]:
    with pgbouncer(server_url) as b:
        yield b


@dataclass
class Database:
    direct: str  # on the server itself
    pooled: str  # the same database through PgBouncer


@pytest.fixture
async def database(server_url: str, bouncer: Bouncer) -> AsyncIterator[Database]:
    """An empty database of the test's own (``anonid migrate`` builds it)."""
    name = "anonid_pooler_" + secrets.token_hex(4)
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield Database(with_database(server_url, name), bouncer.url(name))
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def test_a_pooler_is_recognised_by_its_cancel_key_or_by_a_different_direct_url(
    database: Database,
) -> None:
    alone = await resolve_topology(make_settings(database.pooled), database.pooled)
    assert alone.pooled and alone.direct_url is None
    settings = make_settings(database.pooled, database_direct_url=database.direct)
    paired = await resolve_topology(settings, database.pooled)
    assert paired.pooled and paired.direct_url == async_url(database.direct)
    plain = await resolve_topology(make_settings(database.direct), database.direct)
    assert not plain.pooled and plain.direct_url == plain.url


async def test_one_cull_runs_at_a_time_through_the_pooler_without_a_direct_url(
    database: Database, tmp_path: Path
) -> None:
    assert run(["migrate"], tmp_path, base_env(database.pooled, "smtp://x:1", 8000)).returncode == 0
    stale = await fetch(
        database.direct,
        "INSERT INTO users (id, username, is_anonymous, data, created_at, updated_at) "
        "VALUES (gen_random_uuid(), 'stale-' || md5(random()::text), true, '{}', "
        "now() - interval '90 days', now() - interval '90 days') RETURNING id",
    )
    settings = make_settings(database.pooled)
    engine = create_engine(database.pooled, pool_size=2)
    # Another culler, somewhere, holds the lock in its transaction (through the pooler too).
    other = await asyncpg.connect(database.pooled, statement_cache_size=0)
    try:
        await other.execute("BEGIN")
        assert await other.fetchval("SELECT pg_try_advisory_xact_lock($1)", CULL_LOCK)
        skipped = await run_cull(engine, settings)
        assert skipped["deleted"] == 0 and skipped["batches"] == 0
        assert await fetch(database.direct, "SELECT 1 FROM users WHERE id = $1", stale[0]["id"])
        await other.execute("ROLLBACK")
        # Its transaction over, the lock is free again: nothing held it on a pooled connection.
        culled = await run_cull(engine, settings)
        assert culled["deleted"] >= 1
        assert not await fetch(database.direct, "SELECT 1 FROM users WHERE id = $1", stale[0]["id"])
        assert (await run_cull(engine, settings))["deleted"] == 0  # and again, no leftover lock
    finally:
        await other.close()
        await engine.dispose()


def _env(database: Database, mail: MailServer, port: int, direct: bool, **extra: str) -> dict:
    values = {"ANONID_RUN_WORKER": "false", **extra}
    if direct:
        values["ANONID_DATABASE_DIRECT_URL"] = database.direct
    return base_env(database.pooled, mail.url, port, **values)


async def _setup_link(mail: MailServer, address: str) -> str:
    msg = await mail.wait_for(lambda m: m["To"] == address, timeout=30)
    return parse_qs(urlsplit(links_in(msg)[0]).query)["token"][0]


@pytest.mark.parametrize("direct", [True, False], ids=["with-direct-url", "pooler-only"])
async def test_the_whole_lifecycle_works_through_pgbouncer_in_transaction_mode(
    database: Database, tmp_path: Path, direct: bool
) -> None:
    mail = MailServer()
    mail.start()
    port = free_port(*PORTS)
    env = _env(database, mail, port, direct)
    migrated = run(["migrate"], tmp_path, env)
    assert migrated.returncode == 0, migrated.stderr
    served = serve(tmp_path, env, port)
    worker = Worker(tmp_path, env, "worker")
    try:
        async with httpx.AsyncClient(base_url=served.base, timeout=30) as c:
            # Guest and data, on the hot paths.
            guest_id, guest = await new_guest(c)
            assert (
                await c.patch("/v1/me/data", json={"cart": [1]}, headers=guest)
            ).status_code == 200
            me = await c.get("/v1/me", headers=guest)
            assert me.status_code == 200 and me.json()["data"] == {"cart": [1]}
            # Conversion: the email arrives, the setup link makes the same account registered.
            address = f"pooled-{secrets.token_hex(3)}@example.com"
            r = await c.post("/v1/me/conversion", json={"email": address}, headers=guest)
            assert r.status_code == 202, r.text
            token = await _setup_link(mail, address)
            r = await c.post(
                "/v1/password-setup", json={"token": token, "password": PASSWORD}, headers=BEARER
            )
            assert r.status_code == 200, r.text
            assert r.json()["user"]["id"] == guest_id and r.json()["user"]["state"] == "registered"
            # Login from another guest merges its data into the account.
            other_id, other = await new_guest(c)
            await c.patch("/v1/me/data", json={"wish": "x"}, headers=other)
            r = await c.post(
                "/v1/login",
                json={"email": address, "password": PASSWORD},
                headers=BEARER | other,
            )
            assert r.status_code == 200, r.text
            account = {"Authorization": f"Bearer {r.json()['access_token']}"}
            merged = (await c.get("/v1/me", headers=account)).json()
            assert merged["id"] == guest_id and merged["data"] == {"cart": [1], "wish": "x"}
            # The worker restarts: an email queued while it was away leaves once it is back.
            assert worker.stop() == 0
            _, late_guest = await new_guest(c)
            late = f"late-{secrets.token_hex(3)}@example.com"
            r = await c.post("/v1/me/conversion", json={"email": late}, headers=late_guest)
            assert r.status_code == 202, r.text
            worker = Worker(tmp_path, env, "worker-again")
            await _setup_link(mail, late)
            # The cull, with its lock: a stale guest goes, the fresh and the registered stay.
            stale_id, _ = await new_guest(c)
            await fetch(
                database.direct,
                "UPDATE users SET updated_at = now() - interval '90 days' WHERE id = $1",
                stale_id,
            )
            culled = run(["cull"], tmp_path, env)
            assert culled.returncode == 0, culled.stderr
            assert json.loads(culled.stdout)["deleted"] >= 1
            left = {str(r["id"]) for r in await fetch(database.direct, "SELECT id FROM users")}
            assert stale_id not in left and guest_id in left
            assert other_id not in left  # merged away at login
        polling = "polling the outbox" in worker.log.read_text()
    finally:
        worker.stop()
        served.stop()
        mail.stop()
    # Without a direct URL the worker cannot LISTEN through the pooler, and polls instead.
    assert polling is not direct


def _connections_to(pid: int, port: int) -> int:
    return sum(
        1
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


async def test_a_process_holds_at_most_pool_size_connections_through_the_pooler(
    database: Database, bouncer: Bouncer, tmp_path: Path
) -> None:
    mail = MailServer()
    mail.start()
    port = free_port(*PORTS)
    env = _env(
        database,
        mail,
        port,
        True,
        ANONID_DATABASE_POOL_SIZE="3",
        ANONID_RUN_WORKER="true",
    )
    assert run(["migrate"], tmp_path, env).returncode == 0
    served = serve(tmp_path, env, port)
    server_port = urlsplit(database.direct).port or 5432
    pooled_seen: list[int] = []
    direct_seen: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            pooled_seen.append(_connections_to(served.proc.pid, bouncer.port))
            direct_seen.append(_connections_to(served.proc.pid, server_port))
            await asyncio.sleep(0.01)

    try:
        async with httpx.AsyncClient(base_url=served.base, timeout=30) as c:
            watcher = asyncio.create_task(watch())
            guests = [await new_guest(c) for _ in range(4)]

            async def work(i: int) -> list[int]:
                _, auth = guests[i % len(guests)]
                statuses = []
                for j in range(10):
                    statuses.append((await c.get("/v1/me", headers=auth)).status_code)
                    r = await c.patch("/v1/me/data", json={str(i): j}, headers=auth)
                    statuses.append(r.status_code)
                    statuses.append((await c.post("/v1/anonymous", headers=BEARER)).status_code)
                    statuses.append((await c.get("/readyz")).status_code)
                return statuses

            results = await asyncio.gather(*(work(i) for i in range(24)))
            done.set()
            await watcher
    finally:
        served.stop()
        mail.stop()
    assert {s for statuses in results for s in statuses} <= {200, 201}
    assert 1 <= max(pooled_seen) <= 3, max(pooled_seen)
    # The direct ones: the worker's LISTEN and the cull's lock, never more.
    assert max(direct_seen) <= 2, max(direct_seen)
