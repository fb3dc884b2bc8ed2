"""Several processes on one PostgreSQL and one Redis: two ``anonid serve``, two ``anonid worker``.

The processes share a database of their own on the test server (the workers deliver every due
row they see, so on the shared test database they would send other tests' mail) and Redis
database ``REDIS_DB``, emptied before and after.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import jwt
import pytest
import redis

from app.platform.db import CULL_LOCK, create_engine
from tests.fault_support import (
    PORTS,
    StallableMailServer,
    Worker,
    base_env,
    fetch,
    new_guest,
    serve,
    until,
)
from tests.outbox_support import private_database
from tests.processes import ANONID, Served, free_port
from tests.tokens import claims_for, sid_of, sign

REDIS_DB = 13
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
KEY_CACHE_SECONDS = 3
ANONYMOUS_LIMIT = 5
BEARER = {"X-Anonid-Token": "bearer"}


@dataclass
class Cluster:
    url: str
    env: dict[str, str]
    servers: list[Served]
    mail: StallableMailServer
    cwd: Path


@pytest.fixture(scope="module")
async def cluster(
    server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cluster]:
    cwd = tmp_path_factory.mktemp("processes")
    store = redis.Redis.from_url(REDIS_URL)
    store.flushdb()
    mail = StallableMailServer()
    async with private_database(server_url) as url:
        env = base_env(
            url,
            mail.url,
            8000,
            ANONID_RATE_LIMIT_STORAGE=REDIS_URL,
            ANONID_ANONYMOUS_RATE_LIMIT=f"{ANONYMOUS_LIMIT}/minute",
            # Tests pick their client address, so one test's requests never spend another's.
            ANONID_TRUSTED_PROXIES="127.0.0.1",
            ANONID_RUN_WORKER="false",
            ANONID_KEY_CACHE_SECONDS=str(KEY_CACHE_SECONDS),
        )
        servers: list[Served] = []
        workers: list[Worker] = []
        try:
            for _ in range(2):
                port = free_port(*PORTS)
                servers.append(serve(cwd, env, port))
            workers = [Worker(cwd, env, f"worker{i}") for i in range(2)]
            yield Cluster(url, env, servers, mail, cwd)
        finally:
            for w in workers:
                w.stop()
            for s in servers:
                s.stop()
            mail.stop()
            store.flushdb()
            store.close()


def _from(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


async def test_rate_limit_is_shared_by_two_servers(cluster: Cluster) -> None:
    a, b = (httpx.AsyncClient(base_url=s.base, timeout=15) for s in cluster.servers)
    async with a, b:
        statuses = []
        for i in range(ANONYMOUS_LIMIT + 3):
            c = (a, b)[i % 2]
            statuses.append(
                (
                    await c.post("/v1/anonymous", headers={**BEARER, **_from("203.0.113.7")})
                ).status_code
            )
        assert statuses == [201] * ANONYMOUS_LIMIT + [429] * 3
        # The same limit on both servers, and another address is unaffected.
        limited = await b.post("/v1/anonymous", headers={**BEARER, **_from("203.0.113.7")})
        assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
        assert int(limited.headers["retry-after"]) > 0
        assert (
            await a.post("/v1/anonymous", headers={**BEARER, **_from("203.0.113.8")})
        ).status_code == 201


async def test_each_email_is_sent_exactly_once_by_two_workers(cluster: Cluster) -> None:
    addresses = [f"once-{i}@example.com" for i in range(20)]
    clients = [httpx.AsyncClient(base_url=s.base, timeout=15) for s in cluster.servers]
    try:
        for i, address in enumerate(addresses):
            c = clients[i % 2]
            c.headers.update(_from(f"198.51.100.{i + 1}"))
            _, auth = await new_guest(c)
            r = await c.post("/v1/me/conversion", json={"email": address}, headers=auth)
            assert r.status_code == 202, r.text
    finally:
        for c in clients:
            await c.aclose()

    async def all_sent() -> bool:
        rows = await fetch(
            cluster.url,
            "SELECT count(*) AS n FROM outbox WHERE payload->>'to' = ANY($1) AND sent_at IS NOT NULL",
            addresses,
        )
        return bool(rows[0]["n"] == len(addresses))

    await until(all_sent, timeout=60, what="every email sent")
    # A message is handed to SMTP before its row is marked sent, so all sends are in by now.
    assert sorted(m["To"] for m in cluster.mail.messages if m["To"] in addresses) == sorted(
        addresses
    )
    ids = [m["Message-ID"] for m in cluster.mail.messages]
    assert len(ids) == len(set(ids))


def _cull(cluster: Cluster, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [ANONID, "cull", *args],
        cwd=cluster.cwd,
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return dict(json.loads(out))


async def test_one_cull_runs_at_a_time_across_processes(cluster: Cluster) -> None:
    rows = await fetch(
        cluster.url,
        "INSERT INTO users (id, username, is_anonymous, created_at, updated_at)"
        " SELECT gen_random_uuid(), 'stale-' || g, true, now() - interval '100 days',"
        " now() - interval '100 days' FROM generate_series(1, 300) g RETURNING id::text",
    )
    stale = {r["id"] for r in rows}

    holder = await asyncpg.connect(cluster.url)
    try:
        # Another culler (this test's connection) holds the lock: neither process may cull.
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", CULL_LOCK)
        blocked = [_cull(cluster) for _ in range(2)]
        assert [_result(p)["deleted"] for p in blocked] == [0, 0]
        left = await fetch(
            cluster.url, "SELECT count(*) AS n FROM users WHERE id::text = ANY($1)", list(stale)
        )
        assert left[0]["n"] == len(stale)
    finally:
        await holder.execute("SELECT pg_advisory_unlock($1)", CULL_LOCK)
        await holder.close()

    racing = [_cull(cluster, "--batch-size", "10") for _ in range(2)]
    deleted = sorted(int(str(_result(p)["deleted"])) for p in racing)
    # Whichever started second found the lock taken (or nothing left): never both at once.
    assert deleted[0] == 0 and deleted[1] >= len(stale)
    events = await fetch(cluster.url, "SELECT payload FROM events WHERE type = 'user.culled'")
    culled = [i for e in events for i in _payload(e["payload"])["ids"] if i in stale]
    assert sorted(culled) == sorted(stale)  # each exactly once


def _payload(value: object) -> dict[str, list[str]]:
    return json.loads(value) if isinstance(value, str) else dict(value)  # type: ignore[arg-type]


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def test_key_rotation_in_one_process_is_honoured_by_the_others_within_the_cache_lifetime(
    cluster: Cluster,
) -> None:
    a, b = (httpx.AsyncClient(base_url=s.base, timeout=15) for s in cluster.servers)
    async with a, b:
        a.headers.update(_from("192.0.2.10"))
        b.headers.update(_from("192.0.2.11"))
        user, before = await new_guest(a)
        old_kid = _kid(before["Authorization"].removeprefix("Bearer "))

        rotated = subprocess.run(
            [ANONID, "keys", "rotate"],
            cwd=cluster.cwd,
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert rotated.returncode == 0, rotated.stderr
        engine = create_engine(cluster.url, pool_size=1)
        try:
            sid = sid_of(before["Authorization"].removeprefix("Bearer "))
            fresh = await sign(engine, claims_for(user, iss="http://127.0.0.1:8000", sid=sid))
        finally:
            await engine.dispose()
        new_kid = _kid(fresh)
        assert new_kid == rotated.stdout.strip() != old_kid

        # A token signed with the new key works on a server that has not reloaded yet (an
        # unknown kid makes it look), and tokens signed before the rotation keep working.
        async def accepted(c: httpx.AsyncClient, token: str) -> bool:
            r = await c.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
            return r.status_code == 200

        await until(lambda: accepted(b, fresh), timeout=15, what="new kid accepted")
        assert await accepted(a, before["Authorization"].removeprefix("Bearer "))

        # Within the cache lifetime both servers sign with the new key and publish it.
        async def signs_with_new_key(c: httpx.AsyncClient) -> bool:
            # A caller with a session gets a freshly signed token (no new account, no rate limit).
            r = await c.post("/v1/anonymous", headers={**BEARER, **before})
            assert r.status_code == 200, r.text
            jwks = (await c.get("/.well-known/jwks.json")).json()
            published = {k["kid"] for k in jwks["keys"]}
            return _kid(r.json()["access_token"]) == new_kid and {old_kid, new_kid} <= published

        for c in (a, b):
            await until(
                lambda c=c: signs_with_new_key(c),
                timeout=KEY_CACHE_SECONDS * 4,
                what="rotation honoured",
            )
