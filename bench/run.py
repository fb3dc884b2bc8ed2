"""The benchmark runner (issue 6): anonid, the yardstick and fastapi-users side by side.

    python bench/run.py            # the full run; writes bench/RESULTS.md
    python bench/run.py --quick    # shorter runs, fewer rows; prints the report
    python bench/run.py --smoke    # starts everything and touches every phase (< 1 minute)

Needs wrk (Debian's package) and the ``bench`` extra (``pip install -e '.[bench]'``), and a
PostgreSQL where it may create and drop databases (``--pg-url``, default the service at
127.0.0.1:5432). Every process it starts is stopped and every database it creates is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg
import extras
import hooks_cost
import hotspots
import pools
import report
from mail import MailCatcher
from servers import (
    BENCH,
    ROOT,
    Server,
    anonid_command,
    anonid_serve_command,
    create_database,
    database_url,
    drop_database,
    run_checked,
    uvicorn_command,
)
from wrk import WrkResult, run_wrk, wrk_binary

# wrk's connections (bench/wrk.py's default): the refresh pool holds twice as many tokens, so
# every connection has one to send from the first request on.
REFRESH_CONNECTIONS = 32

PORTS = {
    "anonid": 18501,
    "yardstick": 18502,
    "fastapi-users": 18503,
    "anonid-2w": 18504,
    "anonid-challenge": 18505,
    "anonid-claims": 18506,
}
SMTP_PORT = 18525
PHASES = ("main", "profile", "scaling", "hooks", "argon2", "email", "cull", "memory")


@dataclass(frozen=True)
class Mode:
    name: str
    seconds: int  # one wrk run
    rounds: int  # A B A B …
    warmup: int  # seconds of unrecorded load per target before its rounds (0: none)
    pool: int  # pre-created sessions per system
    fau_pool: int  # fastapi-users accounts (each costs a password hash to create)
    cull_total: int  # rows in the cull table; half of them stale
    email_seconds: int  # conversions at 50/s for this long
    argon2_seconds: int
    memory_half: int  # requests per half of the memory run
    scaling_rounds: int


MODES = {
    "smoke": Mode("smoke", 1, 1, 0, 20, 2, 4_000, 1, 1, 300, 1),
    "quick": Mode("quick", 5, 2, 2, 500, 20, 200_000, 6, 5, 10_000, 1),
    "full": Mode("full", 10, 3, 3, 1000, 40, 2_000_000, 20, 10, 50_000, 2),
}


@dataclass
class Bench:
    mode: Mode
    admin_url: str
    work: Path
    run_id: str
    servers: dict[str, Server] = field(default_factory=dict)
    databases: list[str] = field(default_factory=list)
    tokens: dict[str, Path] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    mail: MailCatcher | None = None
    problems: list[str] = field(default_factory=list)

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)

    # Databases and servers.

    async def database(self, suffix: str) -> str:
        name = f"anonid_bench_{self.run_id}_{suffix}"
        await create_database(self.admin_url, name)
        self.databases.append(name)
        return database_url(self.admin_url, name)

    async def settle(self) -> None:
        """``VACUUM (ANALYZE)`` every system's database, outside any measurement: a run then
        starts from a settled database instead of paying, in PostgreSQL's CPU, for the dead rows
        and the statistics its predecessor left (autovacuum after 20,000 new guests slowed the
        next run's refreshes by half)."""
        for name in self.databases:
            conn = await asyncpg.connect(database_url(self.admin_url, name))
            try:
                await conn.execute("VACUUM (ANALYZE)")
            finally:
                await conn.close()

    def anonid_env(self, db_url: str) -> dict[str, str]:
        return {
            # The servers run this checkout's code, whatever the venv was installed against.
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
            ),
            "ANONID_DATABASE_URL": db_url,
            # One issuer for every anonid process here, so they accept each other's sessions.
            "ANONID_PUBLIC_URL": f"http://127.0.0.1:{PORTS['anonid']}",
            "ANONID_COOKIE_SECURE": "false",
            "ANONID_AUTO_MIGRATE": "false",
            # One client IP sends everything here; the limiter still runs on every request.
            "ANONID_ANONYMOUS_RATE_LIMIT": "100000/second",
            "ANONID_LOGIN_RATE_LIMIT": "100000/second",
            "ANONID_DATA_RATE_LIMIT": "100000/second",
            # The runner culls when it measures the cull, not the scheduler.
            "ANONID_CULL_INTERVAL_MINUTES": "0",
            "ANONID_SMTP_URL": f"smtp://127.0.0.1:{SMTP_PORT}",
            # As many connections as the yardstick's pool (max_size=20): with fewer, concurrent
            # writes share fewer commits (PostgreSQL flushes the WAL of waiting commits together).
            "ANONID_DATABASE_POOL_SIZE": "20",
            # The GET and PATCH pools are made once and walked for the whole run: their access
            # tokens must not expire meanwhile (a fresh token is the hot path being measured;
            # POST /v1/session/refresh is measured on its own).
            "ANONID_ACCESS_TOKEN_TTL_MINUTES": "1440",
        }

    async def start_anonid(
        self,
        name: str,
        workers: int = 1,
        *,
        port: int | None = None,
        db_url: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> Server:
        """``anonid serve`` as ``name`` (default: its port in PORTS, the run's anonid database),
        with ``extra_env``'s settings on top of the runner's."""
        port = PORTS[name] if port is None else port
        env = self.anonid_env(self.results["anonid_db"] if db_url is None else db_url)
        env.update(extra_env or {})
        server = Server(
            name,
            anonid_serve_command(port, workers),
            port,
            env,
            self.work / f"{name}.log",
            ready_path="/healthz",
        )
        await server.start()
        self.servers[name] = server
        return server

    async def start_all(self) -> None:
        anonid_db = await self.database("anonid")
        self.results["anonid_db"] = anonid_db
        conn = await asyncpg.connect(anonid_db)
        try:
            self.results["pg_version"] = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        self.log("migrating the anonid database (anonid migrate)")
        run_checked(
            [*anonid_command(), "migrate"],
            self.anonid_env(anonid_db),
            self.work / "migrate.log",
        )
        yard_db = await self.database("yardstick")
        fau_db = await self.database("fastapi_users")
        self.mail = MailCatcher(SMTP_PORT, self.work / "smtp-accepted.tsv")
        self.mail.start()
        self.log("starting anonid, the yardstick and fastapi-users")
        yard = Server(
            "yardstick",
            uvicorn_command("yardstick", PORTS["yardstick"]),
            PORTS["yardstick"],
            {"YARDSTICK_DATABASE_URL": yard_db},
            self.work / "yardstick.log",
            ready_path="/me",
        )
        fau = Server(
            "fastapi-users",
            uvicorn_command("fastapi_users_app", PORTS["fastapi-users"]),
            PORTS["fastapi-users"],
            {
                "FASTAPI_USERS_DATABASE_URL": fau_db.replace(
                    "postgresql://", "postgresql+asyncpg://"
                )
            },
            self.work / "fastapi-users.log",
            ready_path="/docs",
        )
        await asyncio.gather(self.start_anonid("anonid"), yard.start(), fau.start())
        self.servers["yardstick"] = yard
        self.servers["fastapi-users"] = fau

    async def make_pools(self) -> None:
        self.log(f"creating session pools ({self.mode.pool} per system)")
        a, y, f = await asyncio.gather(
            pools.anonid_tokens(self.servers["anonid"].url, self.mode.pool),
            pools.yardstick_tokens(self.servers["yardstick"].url, self.mode.pool),
            pools.fastapi_users_tokens(self.servers["fastapi-users"].url, self.mode.fau_pool),
        )
        self.tokens = {
            "anonid": pools.write_tokens(self.work / "anonid.tokens", a),
            "yardstick": pools.write_tokens(self.work / "yardstick.tokens", y),
            "fastapi-users": pools.write_tokens(self.work / "fastapi-users.tokens", f),
        }

    async def cleanup(self) -> None:
        for server in self.servers.values():
            server.stop()
        if self.mail is not None:
            self.mail.stop()
        for name in self.databases:
            try:
                await drop_database(self.admin_url, name)
            except Exception as exc:  # report, but keep cleaning
                self.log(f"could not drop database {name}: {exc}")

    # wrk.

    async def wrk(
        self, target: str, path: str, script: str, seconds: float, **env: str
    ) -> WrkResult:
        server = self.servers[target]
        pool_owner = "anonid" if target.startswith("anonid") else target
        full_env = {"BENCH_PATH": path, **env}
        if script != "post":
            full_env.setdefault("BENCH_TOKENS", str(self.tokens[pool_owner]))
            full_env.setdefault("BENCH_AUTH", "bearer" if target == "fastapi-users" else "cookie")
        cpu_before = server.cpu_ns()
        result = await run_wrk(server.url + path, script, seconds=seconds, env=full_env)
        if result.requests:
            used = (server.cpu_ns() - cpu_before) / 1000 / result.requests
            result = dataclasses.replace(result, server_cpu_us=used)
        if result.bad_status or result.errors:
            problem = (
                f"{target} {path}: {result.bad_status} error statuses, "
                f"{result.errors} socket errors"
            )
            self.problems.append(problem)
            self.log("  warning: " + problem)
        return result

    async def alternate(
        self,
        scenarios: list[tuple[str, str, str, str, dict[str, str]]],
        rounds: int,
        prepare: Callable[[str, float], Awaitable[dict[str, str]]] | None = None,
    ) -> dict[str, list[WrkResult]]:
        """Run each (label, target, path, script, env) in turn, round after round (A B A B).
        ``prepare(label, seconds)``, if given, runs before each run (outside its measurement)
        and returns more environment for it (a fresh pool of single-use inputs)."""

        async def one(
            label: str, target: str, path: str, script: str, env: dict[str, str], seconds: float
        ) -> WrkResult:
            more = await prepare(label, seconds) if prepare is not None else {}
            await self.settle()
            return await self.wrk(target, path, script, seconds, **{**env, **more})

        if self.mode.warmup:
            for label, target, path, script, env in scenarios:
                await one(label, target, path, script, env, self.mode.warmup)
        out: dict[str, list[WrkResult]] = {label: [] for label, *_ in scenarios}
        for round_no in range(rounds):
            for label, target, path, script, env in scenarios:
                result = await one(label, target, path, script, env, self.mode.seconds)
                out[label].append(result)
                self.log(
                    f"  round {round_no + 1} {label}: {result.rps:.0f} req/s, "
                    f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                    f"server CPU {result.server_cpu_us or 0:.0f} µs/request"
                )
        return out

    # Phases.

    async def phase_main(self) -> None:
        self.log("phase main: 32 connections, one worker each, alternating")
        patch = {"BENCH_METHOD": "PATCH"}
        get = {"BENCH_METHOD": "GET"}
        self.results["main"] = {
            "POST /v1/anonymous": await self.alternate(
                [
                    ("anonid", "anonid", "/v1/anonymous", "post", {}),
                    ("yardstick", "yardstick", "/anonymous", "post", {}),
                ],
                self.mode.rounds,
            ),
            "GET /v1/me": await self.alternate(
                [
                    ("anonid", "anonid", "/v1/me", "session", get),
                    ("yardstick", "yardstick", "/me", "session", get),
                    ("fastapi-users", "fastapi-users", "/users/me", "session", get),
                ],
                self.mode.rounds,
            ),
            "PATCH /v1/me/data": await self.alternate(
                [
                    ("anonid", "anonid", "/v1/me/data", "session", patch),
                    ("yardstick", "yardstick", "/me/data", "session", patch),
                ],
                self.mode.rounds,
            ),
            "POST /v1/session/refresh": {"anonid": await self.refresh_rounds()},
        }

    async def refresh_rounds(self) -> list[WrkResult]:
        """``POST /v1/session/refresh`` (anonid's own: no other system has it; its target is a
        share of anonid's ``POST /v1/anonymous`` in the same run). Each run starts from a fresh
        pool of refresh tokens, since a run spends every token it uses and one presented again
        after the reuse interval would end its session; the script replaces each token it spends
        with the one the answer carries."""
        anonid = self.servers["anonid"].url
        count = max(self.mode.pool, 2 * REFRESH_CONNECTIONS)
        runs: list[WrkResult] = []
        for measured in [False] * bool(self.mode.warmup) + [True] * self.mode.rounds:
            pool = pools.write_tokens(
                self.work / "anonid-refresh.tokens",
                await pools.anonid_refresh_tokens(anonid, count),
            )
            seconds = self.mode.seconds if measured else self.mode.warmup
            await self.settle()
            result = await self.wrk(
                "anonid", "/v1/session/refresh", "refresh", seconds, BENCH_TOKENS=str(pool)
            )
            if measured:
                runs.append(result)
                self.log(
                    f"  round {len(runs)} refresh: {result.rps:.0f} req/s, "
                    f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                    f"server CPU {result.server_cpu_us or 0:.0f} µs/request"
                )
        return runs

    async def phase_scaling(self) -> None:
        self.log("phase scaling: anonid --workers 2 against --workers 1 (same database)")
        # The comparison servers are done; their pools would count against max_connections.
        for name in ("yardstick", "fastapi-users"):
            if name in self.servers:
                self.servers.pop(name).stop()
        await self.start_anonid("anonid-2w", workers=2)
        try:
            get = {"BENCH_METHOD": "GET"}
            patch = {"BENCH_METHOD": "PATCH"}
            self.results["scaling"] = {
                "POST /v1/anonymous": await self.alternate(
                    [
                        ("--workers 1", "anonid", "/v1/anonymous", "post", {}),
                        ("--workers 2", "anonid-2w", "/v1/anonymous", "post", {}),
                    ],
                    self.mode.scaling_rounds,
                ),
                "GET /v1/me": await self.alternate(
                    [
                        ("--workers 1", "anonid", "/v1/me", "session", get),
                        ("--workers 2", "anonid-2w", "/v1/me", "session", get),
                    ],
                    self.mode.scaling_rounds,
                ),
                "PATCH /v1/me/data": await self.alternate(
                    [
                        ("--workers 1", "anonid", "/v1/me/data", "session", patch),
                        ("--workers 2", "anonid-2w", "/v1/me/data", "session", patch),
                    ],
                    self.mode.scaling_rounds,
                ),
            }
        finally:
            self.servers.pop("anonid-2w").stop()


def machine_facts() -> dict[str, str]:
    return report.machine_facts()


async def run(args: argparse.Namespace) -> int:
    mode = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    wanted = [p for p in (args.only.split(",") if args.only else PHASES) if p]
    unknown = set(wanted) - set(PHASES)
    phases = [p for p in PHASES if p in wanted]
    if unknown:
        print(f"bench: unknown phase(s) {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    wrk_binary()  # fail early, with the install hint
    work = Path(tempfile.mkdtemp(prefix="anonid-bench-"))
    bench = Bench(mode, args.pg_url, work, run_id=f"{os.getpid()}")
    started = dt.datetime.now(dt.UTC)
    facts = machine_facts()
    bench.log(f"mode {mode.name}; logs in {work}; load average {facts['load_before']}")
    failed = False
    try:
        await bench.start_all()
        await bench.make_pools()
        for phase in phases:
            if phase == "main":
                await bench.phase_main()
            elif phase == "scaling":
                await bench.phase_scaling()
            elif phase == "hooks":
                await hooks_cost.phase_hooks(bench)
            elif phase == "profile":
                await hotspots.phase_profile(bench)
            else:
                await getattr(extras, f"phase_{phase}")(bench)
    except Exception as exc:
        failed = True
        bench.log(f"FAILED: {type(exc).__name__}: {exc}")
        bench.results["failure"] = f"{type(exc).__name__}: {exc}"
    finally:
        await bench.cleanup()
    facts["load_after"] = report.load_average()
    bench.results["problems"] = bench.problems
    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    text = report.render(mode, bench.results, facts, started, command.strip(), PORTS)
    output = args.output or (str(BENCH / "RESULTS.md") if mode.name == "full" else None)
    if output:
        # bench/scale.py's section is its own run's: carried over, not dropped.
        text = report.carry_section(Path(output), text, report.SCALE_HEADING)
        Path(output).write_text(text)
        bench.log(f"wrote {output}")
    else:
        print(text)
    if failed or bench.problems:
        bench.log(f"problems: {bench.problems}" if bench.problems else "the run failed")
        return 1
    return 0


def add_pg_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL database from which the runner may create and drop databases",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="shorter runs, fewer rows")
    size.add_argument("--smoke", action="store_true", help="minimal run of every phase (CI)")
    add_pg_url(parser)
    parser.add_argument("--only", help=f"comma list of phases ({','.join(PHASES)})")
    parser.add_argument(
        "--output", help="write the report here (default: bench/RESULTS.md for full runs)"
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
