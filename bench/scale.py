"""anonid at scale (issue 14 §4): 20 million accounts and 50 million events against an empty base.

    python bench/scale.py                      # the full size; writes its section of bench/RESULTS.md
    python bench/scale.py --accounts 1000000 --events 2500000 --output /tmp/scale.md
    python bench/scale.py --smoke              # 20,000 accounts, 50,000 events, 1-second runs (CI)
    python bench/scale.py --keep               # keep the built database and print its name ...
    python bench/scale.py --reuse NAME --keep --only reads,size   # ... and measure it again

Builds the big database on the PostgreSQL service (``--pg-url``; created, migrated with
``anonid migrate``, filled in SQL by ``bench/scale_build.py``, VACUUM ANALYZE, dropped at the end
unless ``--keep``), then measures, each phase on its own (a phase that fails is reported and the
others still run):

- ``throughput``: POST /v1/anonymous, GET /v1/me and PATCH /v1/me/data with wrk against anonid
  on the big database and anonid on an empty one, alternating A B A B (as bench/run.py's main
  phase). The big side's sessions belong to accounts sampled across the whole table; the empty
  side's are new guests given the same documents, so only the database's size differs;
- ``reads``: latency of GET /v1/admin/stats, GET /metrics and each admin user filter, one request
  at a time;
- ``size``: bytes per account and per event (tables, TOAST and indexes);
- ``cull``: the first cull of the backlog (``run_cull``, what ``anonid cull`` runs), rows per
  second, and the p99 of a paced POST /v1/anonymous load without and during it;
- ``retention``: one day of events aged past ``ANONID_EVENT_RETENTION_DAYS``, then one timed call
  of ``app.outbox.retention.remove_expired``.
Needs what bench/run.py needs (wrk, the ``bench`` extra); ports 18511-18512 must be free.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg
import extras
import httpx
import pools
import report
import scale_build
import scale_report
from run import Bench, Mode, add_pg_url
from servers import (
    BENCH,
    anonid_command,
    create_database,
    database_url,
    drop_database,
    run_checked,
)
from wrk import wrk_binary

FULL_ACCOUNTS = 20_000_000
FULL_EVENTS = 50_000_000
SCALE_PORTS = {"anonid-big": 18511, "anonid-empty": 18512}
PHASES = ("throughput", "reads", "size", "cull", "retention")
ADMIN_KEY = "bench-scale-admin-key-0123456789"
RETENTION_MODULE = "app.outbox.retention"


@dataclass(frozen=True)
class Timing:
    """How long each measurement runs (``mode`` for bench/run.py's helpers, plus this runner's)."""

    mode: Mode
    read_requests: int  # sequential requests per read
    read_budget_s: float  # ... or at most this long
    cull_load_s: int  # the longest paced load beside the cull
    scrapes: int  # GET /metrics requests, ...
    scrape_s: float  # ... one every this many seconds, as Prometheus scrapes


SMOKE = Timing(Mode("smoke", 1, 1, 0, 20, 0, 0, 0, 0, 0, 1), 20, 10.0, 1, 20, 0.0)
# One scrape every 15 s, as the issue's operators scrape: back-to-back requests would be answered
# from the gauges' cache and never show what a scrape costs.
FULL = Timing(Mode("scale", 10, 3, 3, 1000, 0, 0, 0, 0, 0, 1), 200, 60.0, 30, 12, 15.0)


class PhaseError(Exception):
    """A phase that cannot measure; its message goes into the report instead of a figure."""


class ScaleBench(Bench):
    def anonid_env(self, db_url: str) -> dict[str, str]:
        return {**super().anonid_env(db_url), "ANONID_ADMIN_API_KEY": ADMIN_KEY}


@dataclass
class Scale:
    args: argparse.Namespace
    timing: Timing
    bench: ScaleBench
    big_name: str
    big_url: str = ""
    empty_url: str = ""
    # Dropped at the end (unless --keep) only once it is known to be this runner's database.
    droppable: bool = False

    @property
    def results(self) -> dict[str, Any]:
        return self.bench.results

    def log(self, message: str) -> None:
        self.bench.log(message)

    # The big database.

    def migrate(self, db_url: str) -> None:
        run_checked(
            [*anonid_command(), "migrate"],
            self.bench.anonid_env(db_url),
            self.bench.work / "migrate.log",
        )

    async def prepare_big(self) -> None:
        admin = self.bench.admin_url
        self.big_url = database_url(admin, self.big_name)
        if self.args.reuse:
            meta = await read_meta(admin, self.big_name)
            if meta is None:
                raise PhaseError(
                    f"database {self.big_name} was not built by bench/scale.py, or its build "
                    "did not finish: build a new one (drop it, run without --reuse)"
                )
            self.droppable = True
            # The section is headed with the size the database was built at.
            self.args.accounts, self.args.events = meta["accounts"], meta["planned_events"]
            self.log(f"reusing {self.big_name} (built {meta['built_at']}); migrating it")
            self.migrate(self.big_url)
            self.results["build"] = {**meta, "reused": True}
            await self.ensure_sessions()
            return
        await create_database(admin, self.big_name)
        self.droppable = True
        self.log(f"migrating {self.big_name} (anonid migrate)")
        self.migrate(self.big_url)
        plan = scale_build.Plan(self.args.accounts, self.args.events, time.time())
        self.log(
            f"building {plan.accounts:,} accounts and about {plan.events:,} events "
            f"({plan.ghosts:,} guests already gone)"
        )
        built = await scale_build.build(self.big_url, plan, self.log)
        size = await fetchval(self.big_url, "SELECT pg_database_size(current_database())")
        meta = {
            "accounts": plan.accounts,
            "planned_events": plan.events,
            **asdict(built),
            "rows_per_second": built.rows_per_second,
            "database_bytes": size,
            "built_at": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
            "reused": False,
        }
        await write_meta(admin, self.big_name, meta)
        self.results["build"] = meta
        self.log(
            f"  built in {built.insert_seconds:.0f} s ({built.rows_per_second:,.0f} rows/s), "
            f"VACUUM ANALYZE {built.vacuum_seconds:.0f} s, {size / 2**30:.2f} GiB"
        )
        await self.ensure_sessions()

    async def ensure_sessions(self) -> None:
        """One session row per account, added once (a database built before sessions existed
        has none); the sessions the throughput phase mints come on top."""
        if await fetchval(self.big_url, "SELECT EXISTS (SELECT FROM sessions)"):
            return
        self.log("adding a session to every account")
        rows, seconds = await scale_build.add_sessions(self.big_url, self.log)
        self.results["build"]["sessions"] = {"rows": rows, "seconds": seconds}

    async def start_servers(self) -> None:
        self.empty_url = await self.bench.database("empty")
        self.migrate(self.empty_url)
        self.log("starting anonid on the big and on the empty database")
        await asyncio.gather(
            *(
                self.bench.start_anonid(name, port=port, db_url=url)
                for (name, port), url in zip(
                    SCALE_PORTS.items(), (self.big_url, self.empty_url), strict=True
                )
            )
        )
        await self.make_sessions()

    async def make_sessions(self) -> None:
        """Sessions of accounts sampled across the big table; new guests on the empty database,
        each given the document of one sampled account."""
        pool = self.timing.mode.pool
        sample = await sample_accounts(self.big_url, pool)
        big_tokens = await mint_tokens(self.big_url, self.bench, sample)
        empty = self.bench.servers["anonid-empty"].url
        empty_tokens = await pools.anonid_tokens(empty, len(sample))
        async with httpx.AsyncClient(base_url=empty, timeout=30.0) as client:
            for token, row in zip(empty_tokens, sample, strict=True):
                response = await client.put(
                    "/v1/me/data",
                    content=row["data"],
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                    },
                )
                response.raise_for_status()
        work = self.bench.work
        self.bench.tokens = {
            "anonid": pools.write_tokens(work / "big.tokens", big_tokens),
            "anonid-empty": pools.write_tokens(work / "empty.tokens", empty_tokens),
        }
        self.results["sessions"] = {
            "count": len(sample),
            "registered": sum(1 for r in sample if not r["is_anonymous"]),
            "mean_data_bytes": statistics.mean(len(r["data"]) for r in sample),
        }

    # Phases.

    async def phase_throughput(self) -> None:
        self.log("phase throughput: big database against empty, alternating")
        tokens = self.bench.tokens
        out = {}
        for endpoint, path, script, method in (
            ("POST /v1/anonymous", "/v1/anonymous", "post", None),
            ("GET /v1/me", "/v1/me", "session", "GET"),
            ("PATCH /v1/me/data", "/v1/me/data", "session", "PATCH"),
        ):
            scenarios = []
            for label, target, pool in (
                ("big database", "anonid-big", tokens["anonid"]),
                ("empty database", "anonid-empty", tokens["anonid-empty"]),
            ):
                env = {"BENCH_METHOD": method, "BENCH_TOKENS": str(pool)} if method else {}
                scenarios.append((label, target, path, script, env))
            out[endpoint] = await self.bench.alternate(scenarios, self.timing.mode.rounds)
        self.results["throughput"] = out

    async def phase_reads(self) -> None:
        self.log("phase reads: stats, metrics and the admin filters, one request at a time")
        url = self.bench.servers["anonid-big"].url
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        address = await fetchval(
            self.big_url,
            "SELECT email FROM users TABLESAMPLE SYSTEM (1) WHERE email IS NOT NULL LIMIT 1",
        ) or await fetchval(self.big_url, "SELECT email FROM users WHERE email IS NOT NULL LIMIT 1")
        out: dict[str, Any] = {}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120.0) as client:
            first = await client.get("/v1/admin/users", params={"inactive_days": 45})
            cursor = first.json().get("next_cursor") if first.status_code == 200 else None
            reads: list[tuple[str, str, dict[str, Any]]] = [
                ("GET /v1/admin/stats", "/v1/admin/stats", {}),
                ("users?state=anonymous", "/v1/admin/users", {"state": "anonymous"}),
                ("users?state=pending", "/v1/admin/users", {"state": "pending"}),
                ("users?state=registered", "/v1/admin/users", {"state": "registered"}),
                ("users?inactive_days=45", "/v1/admin/users", {"inactive_days": 45}),
                ("users?email=<an existing address>", "/v1/admin/users", {"email": address}),
                (
                    "users?inactive_days=45&cursor=<second page>",
                    "/v1/admin/users",
                    {"inactive_days": 45, "cursor": cursor},
                ),
            ]
            t = self.timing
            out["GET /metrics"] = await timed_reads(
                client,
                "/metrics",
                {},
                t.scrapes,
                t.scrapes * t.scrape_s + t.read_budget_s,
                t.scrape_s,
            )
            for label, path, params in reads:
                out[label] = await timed_reads(
                    client, path, params, t.read_requests, t.read_budget_s
                )
            for label, r in out.items():
                self.log(
                    f"  {label}: {r['n']} requests, p50 {r['p50_ms']:.1f} ms, "
                    f"p99 {r['p99_ms']:.1f} ms, {r['bad']} bad"
                )
        self.results["reads"] = out

    async def phase_size(self) -> None:
        self.log("phase size: bytes per account and per event")
        conn = await asyncpg.connect(self.big_url)
        try:
            out = {}
            for table in ("users", "events", "sessions"):
                row = await conn.fetchrow(
                    # pg_partition_tree lists a partitioned table's parts, nothing for a plain one.
                    "SELECT sum(pg_total_relation_size(t)) AS total, "
                    "sum(pg_table_size(t)) AS heap, sum(pg_indexes_size(t)) AS indexes "
                    "FROM (SELECT relid FROM pg_partition_tree($1) UNION SELECT $1::regclass) "
                    "AS p(t)",
                    table,
                )
                rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
                out[table] = {"rows": rows, **{k: int(row[k] or 0) for k in row.keys()}}
            out["database"] = await conn.fetchval("SELECT pg_database_size(current_database())")
        finally:
            await conn.close()
        self.results["size"] = out

    async def phase_cull(self) -> None:
        from app.settings import Settings

        days = Settings(database_url=self.big_url).cull_after_days
        stale = await fetchval(
            self.big_url,
            "SELECT count(*) FROM users WHERE is_anonymous "
            "AND updated_at < now() - make_interval(days => $1)",
            days,
        )
        if not stale:
            raise PhaseError(
                "no backlog to cull: an earlier run of this database culled it (build a new one)"
            )
        self.log(f"phase cull: the first cull of {stale:,} stale anonymous accounts")
        posts = self.results.get("throughput", {}).get("POST /v1/anonymous", {})
        big = posts.get("big database")
        fallback = statistics.median(r.rps for r in big) if big else 500.0
        env, rate = extras.pacing(self.bench, "POST /v1/anonymous", fallback)
        # The loaded run must end inside the cull: guess its length from the heap walk's rate
        # (99,500 rows/s at 1 million accounts on the 2-core machine; bench/NOTES.md).
        guess = stale / 100_000
        seconds = max(1, min(self.timing.cull_load_s, int(guess * 0.8)))
        without = await extras.paced_wrk(
            self.bench, "anonid-big", "/v1/anonymous", "post", seconds, env
        )
        cull = asyncio.create_task(extras._cull(self.big_url))
        during = await extras.paced_wrk(
            self.bench, "anonid-big", "/v1/anonymous", "post", seconds, env
        )
        result, cull_seconds = await cull
        self.log(
            f"  {result['deleted']:,} rows in {cull_seconds:.1f} s; POST p99 without "
            f"{without.p99_ms:.2f} ms, during {during.p99_ms:.2f} ms"
        )
        self.results["cull"] = {
            "stale": stale,
            "deleted": result["deleted"],
            "batches": result["batches"],
            "seconds": cull_seconds,
            "paced_rps": rate,
            "load_seconds": seconds,
            "without": extras.summary(without),
            "during": extras.summary(during),
            "outlasted_load": cull_seconds >= seconds,
        }

    async def phase_retention(self) -> None:
        try:
            retention = importlib.import_module(RETENTION_MODULE)
        except ModuleNotFoundError as exc:
            if exc.name != RETENTION_MODULE:
                raise
            raise PhaseError(
                f"{RETENTION_MODULE} is missing from this tree (its remove_expired(engine, "
                "settings, *, batch_size=1000) removes expired events): nothing was measured"
            ) from None
        from app.platform.db import create_engine
        from app.settings import Settings

        # The servers' own workers would remove the aged day before the timed call does.
        for server in self.bench.servers.values():
            server.stop()
        settings = Settings(database_url=self.big_url)
        # CONTRACT §3's default, for a tree whose Settings predates the setting.
        days = int(getattr(settings, "event_retention_days", 400))
        self.log(f"phase retention: one day of events aged past {days} days, then removed")
        past = "SELECT count(*) FROM events WHERE created_at < now() - make_interval(days => $1)"
        conn = await asyncpg.connect(self.big_url)
        try:
            status = await conn.execute(
                "UPDATE events SET created_at = created_at - interval '1 day' "
                "WHERE created_at >= now() - make_interval(days => $1) "
                "AND created_at < now() - make_interval(days => $1 - 1)",
                days,
            )
            aged = int(status.split()[-1])
            if not aged:
                raise PhaseError(f"no events between {days - 1} and {days} days old to age")
            before = await conn.fetchval(past, days)
            engine = create_engine(self.big_url, pool_size=2)
            try:
                started = time.perf_counter()
                returned = await retention.remove_expired(engine, settings)
                seconds = time.perf_counter() - started
            finally:
                await engine.dispose()
            after = await conn.fetchval(past, days)
        finally:
            await conn.close()
        self.log(f"  {before - after:,} of {before:,} expired events removed in {seconds:.2f} s")
        self.results["retention"] = {
            "retention_days": days,
            "aged": aged,
            "expired_before": before,
            "expired_after": after,
            "removed": before - after,
            "seconds": seconds,
            "returned": returned,
        }


async def timed_reads(
    client: httpx.AsyncClient,
    path: str,
    params: dict[str, Any],
    requests: int,
    budget_s: float,
    pace_s: float = 0.0,
) -> dict[str, Any]:
    """Up to ``requests`` sequential requests, each ``pace_s`` after the previous one started
    (within ``budget_s``), after one unrecorded request; client-side latency."""
    await client.get(path, params=params)
    latencies: list[float] = []
    bad = 0
    deadline = time.monotonic() + budget_s
    while len(latencies) < requests and time.monotonic() < deadline:
        if latencies and pace_s:
            await asyncio.sleep(max(0.0, pace_s - latencies[-1] / 1000))
        started = time.perf_counter()
        response = await client.get(path, params=params)
        latencies.append((time.perf_counter() - started) * 1000)
        bad += response.status_code != 200
    return {
        "n": len(latencies),
        "p50_ms": extras.percentile(latencies, 50),
        "p99_ms": extras.percentile(latencies, 99),
        "max_ms": max(latencies),
        "bad": bad,
        "pace_s": pace_s,
    }


# The build's description, kept with the database for --reuse.


async def read_meta(admin_url: str, name: str) -> dict[str, Any] | None:
    text = await fetchval(
        admin_url,
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
        name,
    )
    try:
        meta = json.loads(text or "")
    except ValueError:
        return None
    return meta.get("anonid_scale") if isinstance(meta, dict) else None


async def write_meta(admin_url: str, name: str, meta: dict[str, Any]) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        text = json.dumps({"anonid_scale": meta}).replace("'", "''")
        await conn.execute(f"COMMENT ON DATABASE \"{name}\" IS '{text}'")
    finally:
        await conn.close()


async def fetchval(db_url: str, query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(db_url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def sample_accounts(db_url: str, count: int) -> list[dict[str, Any]]:
    """``count`` accounts from pages all over the table (TABLESAMPLE SYSTEM), in random order."""
    conn = await asyncpg.connect(db_url)
    try:
        total = await conn.fetchval(
            "SELECT greatest(reltuples, 1) FROM pg_class WHERE oid = 'users'::regclass"
        )
        percent = min(100.0, 100.0 * count * 20 / total)
        query = (
            "SELECT id, is_anonymous, session_version, data::text AS data FROM users "
            "TABLESAMPLE SYSTEM ($1) ORDER BY random() LIMIT $2"
        )
        rows = await conn.fetch(query, percent, count)
        if len(rows) < count:
            rows = await conn.fetch(query, 100.0, count)
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def mint_tokens(db_url: str, bench: Bench, sample: list[dict[str, Any]]) -> list[str]:
    """Access tokens for existing accounts, each with a session row of its own, signed with the
    server's own key (as a login would issue them), so no request has to create or log in each
    account. The sessions' refresh tokens are random values nobody holds."""
    import hashlib
    import secrets

    import sqlalchemy as sa

    from app.platform.db import create_engine
    from app.platform.ids import new_id
    from app.sessions.access import AccessTokens
    from app.sessions.keys import KeyRing
    from app.settings import Settings

    env = bench.anonid_env(db_url)
    settings = Settings(
        database_url=db_url,
        public_url=env["ANONID_PUBLIC_URL"],
        cookie_secure=False,
        access_token_ttl_minutes=float(env["ANONID_ACCESS_TOKEN_TTL_MINUTES"]),
    )
    engine = create_engine(db_url, pool_size=1)
    sids = [new_id() for _ in sample]
    try:
        ring = KeyRing(settings, engine)
        await ring.load()
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO sessions (id, user_id, family_hash, live_hashes) "
                    "VALUES (:sid, :user, :family, ARRAY[CAST(:hash AS bytea)])"
                ),
                [
                    {
                        "sid": sid,
                        "user": r["id"],
                        "family": hashlib.sha256(secrets.token_bytes(16)).digest(),
                        "hash": hashlib.sha256(secrets.token_bytes(32)).digest(),
                    }
                    for sid, r in zip(sids, sample, strict=True)
                ],
            )
    finally:
        await engine.dispose()
    tokens = AccessTokens(ring)
    return [
        tokens.issue(r["id"], r["is_anonymous"], r["session_version"], sid).token
        for sid, r in zip(sids, sample, strict=True)
    ]


async def run(args: argparse.Namespace) -> int:
    timing = SMOKE if args.smoke else FULL
    wanted = [p for p in (args.only.split(",") if args.only else PHASES) if p]
    unknown = set(wanted) - set(PHASES)
    if unknown:
        print(f"scale: unknown phase(s) {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    phases = [p for p in PHASES if p in wanted]
    wrk_binary()
    work = Path(tempfile.mkdtemp(prefix="anonid-scale-"))
    bench = ScaleBench(timing.mode, args.pg_url, work, run_id=f"scale{os.getpid()}")
    name = args.reuse or f"anonid_scale_{os.getpid()}"
    scale = Scale(args, timing, bench, name)
    started = dt.datetime.now(dt.UTC)
    load_before = report.load_average()
    bench.log(f"{args.accounts:,} accounts, {args.events:,} events; logs in {work}")
    failures: dict[str, str] = {}
    try:
        bench.results["pg_version"] = await fetchval(args.pg_url, "SHOW server_version")
        await scale.prepare_big()
        if {"throughput", "reads", "cull"} & set(phases):
            await scale.start_servers()
        for phase in phases:
            try:
                await getattr(scale, f"phase_{phase}")()
            except PhaseError as exc:
                failures[phase] = str(exc)
            except Exception as exc:  # one phase's failure must not hide the others' figures
                failures[phase] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            if phase in failures:
                bench.log(f"  phase {phase} FAILED: {failures[phase]}")
    except Exception as exc:
        failures["build"] = f"{type(exc).__name__}: {exc}"
        bench.log(f"FAILED: {failures['build']}")
        traceback.print_exc()
    finally:
        await bench.cleanup()
        if args.keep and scale.droppable:
            bench.log(f"kept the big database: rerun with --reuse {name}")
        elif scale.droppable:
            await drop_database(args.pg_url, name)
    bench.results["failures"] = failures
    bench.results["problems"] = bench.problems
    facts = {
        "load_before": load_before,
        "load_after": report.load_average(),
        "commit": report.machine_facts()["commit"],
        "cpu": f"{os.cpu_count()} × " + report.machine_facts()["cpu"],
    }
    command = "python bench/scale.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    section = scale_report.render(args, phases, bench.results, facts, started, command.strip())
    full_size = args.accounts == FULL_ACCOUNTS and args.events == FULL_EVENTS and not args.smoke
    output = args.output or (str(BENCH / "RESULTS.md") if full_size else None)
    if output:
        path = Path(output)
        document = path.read_text() if path.exists() else ""
        path.write_text(report.replace_section(document, report.SCALE_HEADING, section))
        bench.log(f"wrote its section of {output}")
    else:
        print(section)
    if failures or bench.problems:
        bench.log(f"failed phases: {', '.join(failures) or 'none'}; problems: {bench.problems}")
        return 1
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=None, help=f"default {FULL_ACCOUNTS:,}")
    parser.add_argument("--events", type=int, default=None, help=f"default {FULL_EVENTS:,}")
    parser.add_argument(
        "--smoke", action="store_true", help="20,000 accounts, 50,000 events, 1-second runs"
    )
    parser.add_argument("--only", help=f"comma list of phases ({','.join(PHASES)})")
    parser.add_argument("--keep", action="store_true", help="keep the big database afterwards")
    parser.add_argument("--reuse", metavar="NAME", help="measure a database kept by --keep")
    add_pg_url(parser)
    parser.add_argument(
        "--output",
        help="write the section into this file (default: bench/RESULTS.md at the full size; "
        "otherwise printed)",
    )
    args = parser.parse_args()
    small = 20_000, 50_000
    args.accounts = args.accounts or (small[0] if args.smoke else FULL_ACCOUNTS)
    args.events = args.events or (small[1] if args.smoke else FULL_EVENTS)
    if args.accounts < 10 or args.events < scale_build.EVENTS_PER_ACCOUNT * args.accounts:
        parser.error(
            f"--events must be at least {scale_build.EVENTS_PER_ACCOUNT:.3f} × --accounts "
            "(the events of the accounts that exist), and --accounts at least 10"
        )
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
