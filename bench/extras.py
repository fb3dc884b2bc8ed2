"""The measurements beyond the request path: argon2 isolation, email latency, cull, memory.

Each ``phase_*`` takes the runner's ``Bench`` and stores a plain dict in ``bench.results``.
"Paced" loads are wrk with a fixed delay between requests on each connection: a steady load well
below saturation, so a p99 reflects interference, not queueing behind a saturated worker.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pools
import uuid_utils
from wrk import WrkResult

if TYPE_CHECKING:
    from run import Bench

PACED_CONNECTIONS = 16
PACED_SHARE = 0.4  # of the saturated throughput measured by the main phase
LOGINS_PER_SECOND = 20
CONVERSIONS_PER_SECOND = 50
LOGIN_ACCOUNTS = 20
LOGIN_PASSWORD = "bench-login-password-1"  # noqa: S105 (a benchmark account's password)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, round(q / 100 * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


def summary(result: WrkResult) -> dict[str, float]:
    return {
        "rps": result.rps,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "requests": result.requests,
        "bad": result.bad_status + result.errors,
    }


def pacing(bench: Bench, endpoint: str, fallback_rps: float) -> tuple[dict[str, str], float]:
    """wrk settings for a steady load at PACED_SHARE of the endpoint's saturated throughput."""
    main = bench.results.get("main", {}).get(endpoint, {}).get("anonid")
    saturated = statistics.median(r.rps for r in main) if main else fallback_rps
    rate = max(50.0, saturated * PACED_SHARE)
    delay_ms = max(1, round(PACED_CONNECTIONS * 1000 / rate))
    return {"BENCH_DELAY_MS": str(delay_ms)}, PACED_CONNECTIONS * 1000 / delay_ms


async def paced_wrk(
    bench: Bench,
    target: str,
    path: str,
    script: str,
    seconds: float,
    env: dict[str, str],
    connections: int = PACED_CONNECTIONS,
) -> WrkResult:
    from wrk import run_wrk

    server = bench.servers[target]
    full = {"BENCH_PATH": path, **env}
    if script != "post":
        full.setdefault("BENCH_TOKENS", str(bench.tokens["anonid"]))
    return await run_wrk(
        server.url + path, script, seconds=seconds, env=full, connections=connections
    )


async def at_fixed_rate(
    rate: float, seconds: float, one: Callable[[int], Awaitable[Any]]
) -> list[Any]:
    """Start ``one(i)`` at i / rate seconds, whatever the earlier ones are doing."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for i in range(int(rate * seconds)):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    return list(await asyncio.gather(*tasks))


# argon2 isolation.


async def _login_accounts(db_url: str, count: int) -> list[str]:
    """Registered accounts written straight to the database, hashed by anonid's own hasher."""
    from app.credentials.password_hashing import HASHER, normalise

    password_hash = HASHER.hash(normalise(LOGIN_PASSWORD))
    emails = [f"login-{i}-{uuid_utils.uuid4().hex[:8]}@example.com" for i in range(count)]
    conn = await asyncpg.connect(db_url)
    try:
        await conn.executemany(
            "INSERT INTO users (id, email, is_anonymous, password_hash, converted_at) "
            "VALUES ($1, $2, false, $3, now())",
            [(str(uuid_utils.uuid7()), e, password_hash) for e in emails],
        )
    finally:
        await conn.close()
    return emails


async def phase_argon2(bench: Bench) -> None:
    seconds = bench.mode.argon2_seconds
    bench.log(f"phase argon2: GET /v1/me p99 idle vs with {LOGINS_PER_SECOND} logins/s")
    emails = await _login_accounts(bench.results["anonid_db"], LOGIN_ACCOUNTS)
    env, rate = pacing(bench, "GET /v1/me", 1000.0)
    env["BENCH_METHOD"] = "GET"
    idle = await paced_wrk(bench, "anonid", "/v1/me", "session", seconds, env)

    statuses: list[int] = []
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=bench.servers["anonid"].url, timeout=30.0) as client:

        async def login(i: int) -> None:
            started = time.perf_counter()
            response = await client.post(
                "/v1/login",
                json={"email": emails[i % len(emails)], "password": LOGIN_PASSWORD},
                headers={"X-Anonid-Token": "bearer"},
            )
            latencies.append((time.perf_counter() - started) * 1000)
            statuses.append(response.status_code)

        loaded, _ = await asyncio.gather(
            paced_wrk(bench, "anonid", "/v1/me", "session", seconds, env),
            at_fixed_rate(LOGINS_PER_SECOND, seconds, login),
        )
    ok = sum(1 for s in statuses if s == 200)
    bench.log(
        f"  idle p99 {idle.p99_ms:.2f} ms, with logins {loaded.p99_ms:.2f} ms; "
        f"{ok}/{len(statuses)} logins ok, login p50 {percentile(latencies, 50):.0f} ms"
    )
    bench.results["argon2"] = {
        "paced_rps": rate,
        "seconds": seconds,
        "idle": summary(idle),
        "loaded": summary(loaded),
        "logins": len(statuses),
        "logins_ok": ok,
        "login_p50_ms": percentile(latencies, 50),
        "login_p99_ms": percentile(latencies, 99),
    }


# Email latency.


async def phase_email(bench: Bench) -> None:
    seconds = bench.mode.email_seconds
    count = CONVERSIONS_PER_SECOND * seconds
    mail = bench.mail
    assert mail is not None
    bench.log(f"phase email: {count} conversions at {CONVERSIONS_PER_SECOND}/s")
    base = bench.servers["anonid"].url
    tokens = await pools.anonid_tokens(base, count + 1)
    run = uuid_utils.uuid4().hex[:8]
    returned: dict[str, float] = {}
    statuses: list[int] = []

    async with httpx.AsyncClient(base_url=base, timeout=30.0) as client:

        async def convert(i: int) -> None:
            email = f"conv-{run}-{i}@example.com"
            response = await client.post(
                "/v1/me/conversion",
                json={"email": email},
                headers={"Authorization": f"Bearer {tokens[i]}"},
            )
            returned[email] = time.time()
            statuses.append(response.status_code)

        # Does this build deliver mail from `anonid serve` at all? One probe, then the run.
        await convert(count)
        probe = f"conv-{run}-{count}@example.com"
        deadline = time.monotonic() + 15
        while mail.first_accept(probe) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if mail.first_accept(probe) is None:
            bench.results["email"] = {
                "skipped": "no email reached the SMTP server within 15 s of a conversion: "
                "this build's `anonid serve` does not deliver the outbox",
                "probe_status": statuses[-1],
            }
            bench.log("  skipped: " + bench.results["email"]["skipped"])
            return
        returned.clear()
        statuses.clear()
        await at_fixed_rate(CONVERSIONS_PER_SECOND, seconds, convert)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(mail.first_accept(e) is not None for e in returned):
            break
        await asyncio.sleep(0.2)
    latencies = [
        (accepted - returned[e]) * 1000
        for e in returned
        if (accepted := mail.first_accept(e)) is not None
    ]
    bench.log(
        f"  {len(latencies)}/{len(returned)} emails; p50 {percentile(latencies, 50):.1f} ms, "
        f"p99 {percentile(latencies, 99):.1f} ms"
    )
    bench.results["email"] = {
        "conversions": len(returned),
        "accepted_202": sum(1 for s in statuses if s == 202),
        "emails": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "seconds": seconds,
    }


# Cull.

FILL = """
INSERT INTO users (id, username, is_anonymous, data, created_at, updated_at)
SELECT gen_random_uuid(), 'cull-' || g, true, '{"cart": {"items": 1}}'::jsonb, ts, ts
FROM (
    SELECT g, CASE WHEN g % 2 = 0
        THEN now() - interval '41 days' - random() * interval '300 days'
        ELSE now() - random() * interval '29 days' END AS ts
    FROM generate_series(1, $1::int) AS g
) AS s
"""
PLAIN_DELETE = (
    "DELETE FROM users WHERE is_anonymous AND updated_at < now() - make_interval(days => 40)"
)


async def _fill(db_url: str, total: int) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("TRUNCATE users CASCADE")
        await conn.execute(FILL, total)
        await conn.execute("VACUUM ANALYZE users")
    finally:
        await conn.close()


async def _cull(db_url: str) -> tuple[dict[str, Any], float]:
    """anonid's own cull (the function behind ``anonid cull`` and the worker), timed."""
    from app.lifecycle.cull import run_cull
    from app.platform.db import create_engine
    from app.settings import Settings

    settings = Settings(database_url=db_url, cull_interval_minutes=0)
    # Two connections, as `anonid cull` opens: without a direct one, the lock holds one of them.
    engine = create_engine(db_url, pool_size=2)
    try:
        started = time.perf_counter()
        result = await run_cull(engine, settings)
        return result, time.perf_counter() - started
    finally:
        await engine.dispose()


async def phase_cull(bench: Bench) -> None:
    total = bench.mode.cull_total
    db_url = bench.results["anonid_db"]
    bench.log(f"phase cull: {total // 2} stale anonymous accounts among {total}")
    await _fill(db_url, total)
    conn = await asyncpg.connect(db_url)
    try:
        started = time.perf_counter()
        status = await conn.execute(PLAIN_DELETE)
        plain_seconds = time.perf_counter() - started
    finally:
        await conn.close()
    plain_rows = int(status.split()[-1])
    bench.log(f"  plain DELETE: {plain_rows} rows in {plain_seconds:.2f} s")

    await _fill(db_url, total)
    result, cull_seconds = await _cull(db_url)
    bench.log(f"  anonid cull: {result['deleted']} rows in {cull_seconds:.2f} s")

    await _fill(db_url, total)
    env, rate = pacing(bench, "POST /v1/anonymous", 500.0)
    # The loaded run must end inside the cull: shorter than the cull took alone.
    seconds = max(1, min(bench.mode.seconds, int(cull_seconds * 0.8)))
    without = await paced_wrk(bench, "anonid", "/v1/anonymous", "post", seconds, env)
    cull_task = asyncio.create_task(_cull(db_url))
    during = await paced_wrk(bench, "anonid", "/v1/anonymous", "post", seconds, env)
    loaded_result, loaded_seconds = await cull_task
    bench.log(
        f"  POST /v1/anonymous p99 without {without.p99_ms:.2f} ms, during {during.p99_ms:.2f} ms"
    )
    bench.results["cull"] = {
        "total": total,
        "stale": total // 2,
        "plain_rows": plain_rows,
        "plain_seconds": plain_seconds,
        "cull_rows": result["deleted"],
        "cull_batches": result["batches"],
        "cull_seconds": cull_seconds,
        "paced_rps": rate,
        "load_seconds": seconds,
        "without": summary(without),
        "during": summary(during),
        "cull_under_load_seconds": loaded_seconds,
        "cull_under_load_rows": loaded_result["deleted"],
        "cull_outlasted_load": loaded_seconds >= seconds,
    }


# Memory.


async def phase_memory(bench: Bench) -> None:
    half = bench.mode.memory_half
    bench.log(f"phase memory: fresh anonid worker, 2 x {half} mixed requests")
    server = bench.servers["anonid"]
    server.stop()
    await server.start()
    tokens = await pools.anonid_tokens(server.url, bench.mode.pool)
    pools.write_tokens(bench.tokens["anonid"], tokens)
    rss = [server.rss_kib()]
    runs = []
    for _ in range(2):
        result = await paced_wrk(
            bench, "anonid", "/", "mixed", 900, {"BENCH_STOP_AFTER": str(half)}, connections=32
        )
        runs.append(result)
        rss.append(server.rss_kib())
        bench.log(
            f"  {result.requests} requests at {result.rps:.0f} req/s; RSS {rss[-1] / 1024:.1f} MiB"
        )
    bench.results["memory"] = {
        "half": half,
        "rss_start_kib": rss[0],
        "rss_first_kib": rss[1],
        "rss_second_kib": rss[2],
        "requests": [r.requests for r in runs],
        "bad": sum(r.bad_status + r.errors for r in runs),
    }
