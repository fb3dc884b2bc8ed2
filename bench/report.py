"""``bench/RESULTS.md``: machine facts, versions, the side-by-side table and the extra figures."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
NOTES = BENCH / "NOTES.md"

PACKAGES = (
    "anonid",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "sqlalchemy",
    "asyncpg",
    "pyjwt",
    "cryptography",
    "orjson",
    "fastapi-users",
    "fastapi-users-db-sqlalchemy",
)


# The section bench/scale.py writes; bench/run.py keeps it when it rewrites the file.
SCALE_HEADING = "## Scale: "
ANALYSIS_HEADING = "## Analysis (from `bench/NOTES.md`"


def _section_bounds(lines: list[str], heading: str) -> tuple[int, int] | None:
    """Lines ``[start, end)`` of the ``## `` section whose heading starts with ``heading``."""
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return start, end


def replace_section(document: str, heading: str, section: str) -> str:
    """``document`` with its section ``heading`` replaced by ``section`` (or, if it has none,
    ``section`` inserted before the hand-written analysis, else at the end); nothing else moves."""
    lines = document.splitlines()
    new = [*section.rstrip("\n").splitlines(), ""]
    bounds = _section_bounds(lines, heading)
    if bounds is None:
        at = _section_bounds(lines, ANALYSIS_HEADING)
        start = end = at[0] if at else len(lines)
        if start == len(lines) and lines and lines[-1] != "":
            new = ["", *new]
    else:
        start, end = bounds
    return "\n".join(lines[:start] + new + lines[end:]).rstrip("\n") + "\n"


def carry_section(path: Path, document: str, heading: str) -> str:
    """``document`` with the section ``heading`` of the file at ``path`` carried over, if any."""
    if not path.exists():
        return document
    lines = path.read_text().splitlines()
    bounds = _section_bounds(lines, heading)
    if bounds is None:
        return document
    return replace_section(document, heading, "\n".join(lines[bounds[0] : bounds[1]]))


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _out(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "unavailable"
    return (done.stdout or done.stderr).strip()


def machine_facts() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    commit = _out(["git", "-C", str(BENCH.parent), "rev-parse", "--short", "HEAD"])
    # The report and its hand-written notes are outputs of the run, not code under test.
    dirty = _out(
        [
            "git",
            "-C",
            str(BENCH.parent),
            "status",
            "--porcelain",
            "--",
            "app",
            "bench",
            ":!bench/RESULTS.md",
            ":!bench/NOTES.md",
        ]
    )
    return {
        "nproc": _out(["nproc"]),
        "cpu": cpu,
        "free": _out(["free", "-m"]),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": _out(["wrk", "-v"]).splitlines()[0] if _out(["wrk", "-v"]) else "unavailable",
        "packages": ", ".join(versions),
        "commit": commit + (" (with uncommitted changes in app/ or bench/)" if dirty else ""),
        "load_before": load_average(),
        "pid": str(os.getpid()),
    }


def _ms(value: float) -> str:
    return f"{value:.2f}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _main_rows(results: dict[str, Any]) -> tuple[list[str], list[str]]:
    rows, checks = [], []
    main = results.get("main", {})
    medians: dict[str, dict[str, dict[str, float]]] = {}
    for endpoint, systems in main.items():
        medians[endpoint] = {}
        for system, runs in systems.items():
            medians[endpoint][system] = {
                "rps": statistics.median(r.rps for r in runs),
                "p50": statistics.median(r.p50_ms for r in runs),
                "p99": statistics.median(r.p99_ms for r in runs),
                "cpu": statistics.median(r.server_cpu_us or 0.0 for r in runs),
                "bad": sum(r.bad_status + r.errors for r in runs),
            }
        yard = medians[endpoint].get("yardstick")
        for system, m in medians[endpoint].items():
            ratio = f"{m['rps'] / yard['rps']:.2f}" if yard else ""
            p99_ratio = f"{m['p99'] / yard['p99']:.2f}" if yard else ""
            cpu_ratio = f"{m['cpu'] / yard['cpu']:.2f}" if yard and yard["cpu"] else ""
            rows.append(
                f"| {endpoint} | {system} | {m['rps']:.0f} | {_ms(m['p50'])} | {_ms(m['p99'])} "
                f"| {m['cpu']:.0f} | {ratio} | {p99_ratio} | {cpu_ratio} | {m['bad']} |"
            )
    a = medians.get("POST /v1/anonymous", {})
    if "anonid" in a and "yardstick" in a:
        r = a["anonid"]["rps"] / a["yardstick"]["rps"]
        p = a["anonid"]["p99"] / a["yardstick"]["p99"]
        checks.append(
            f"| POST /v1/anonymous throughput ≥ 0.8 × yardstick | {r:.2f} × | {_verdict(r >= 0.8)} |"
        )
        checks.append(
            f"| POST /v1/anonymous p99 ≤ 2 × yardstick | {p:.2f} × | {_verdict(p <= 2)} |"
        )
    g = medians.get("GET /v1/me", {})
    if "anonid" in g and "yardstick" in g:
        r = g["anonid"]["rps"] / g["yardstick"]["rps"]
        checks.append(
            f"| GET /v1/me throughput ≥ 0.8 × yardstick | {r:.2f} × | {_verdict(r >= 0.8)} |"
        )
    if "anonid" in g and "fastapi-users" in g:
        r = g["anonid"]["rps"] / g["fastapi-users"]["rps"]
        checks.append(
            f"| GET /v1/me throughput ≥ 3 × fastapi-users `GET /users/me` | {r:.2f} × | {_verdict(r >= 3)} |"
        )
    rf = medians.get("POST /v1/session/refresh", {})
    if "anonid" in rf and "anonid" in a:
        r = rf["anonid"]["rps"] / a["anonid"]["rps"]
        checks.append(
            "| POST /v1/session/refresh throughput ≥ 0.7 × anonid's POST /v1/anonymous "
            f"| {r:.2f} × | {_verdict(r >= 0.7)} |"
        )
    pt = medians.get("PATCH /v1/me/data", {})
    if "anonid" in pt and "yardstick" in pt:
        r = pt["anonid"]["rps"] / pt["yardstick"]["rps"]
        checks.append(
            f"| PATCH /v1/me/data throughput ≥ 0.7 × yardstick | {r:.2f} × | {_verdict(r >= 0.7)} |"
        )
    return rows, checks


def _rounds(section: dict[str, Any]) -> list[str]:
    lines = [
        "| endpoint | system | round | req/s | p50 ms | p99 ms | server CPU µs/req | requests |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for endpoint, systems in section.items():
        for system, runs in systems.items():
            for i, r in enumerate(runs, 1):
                lines.append(
                    f"| {endpoint} | {system} | {i} | {r.rps:.0f} | {_ms(r.p50_ms)} | {_ms(r.p99_ms)} "
                    f"| {r.server_cpu_us or 0:.0f} | {r.requests} |"
                )
    return lines


def render(
    mode: Any,
    results: dict[str, Any],
    facts: dict[str, str],
    started: dt.datetime,
    command: str,
    ports: dict[str, int],
) -> str:
    out: list[str] = []
    add = out.append
    add("# anonid benchmark results")
    add("")
    add(f"Generated by `{command}` (mode **{mode.name}**) on {started:%Y-%m-%d %H:%M} UTC.")
    add("Every figure below was measured in this one run; nothing is copied from elsewhere.")
    add("")
    add("## Machine")
    add("")
    add(f"- `nproc`: {facts['nproc']}; CPU: {facts['cpu']}; kernel {facts['kernel']}")
    add("- `free -m`:")
    add("")
    add("```")
    add(facts["free"])
    add("```")
    add("")
    add(
        f"- load average (1, 5, 15 min) before the run: {facts['load_before']}; after: "
        f"{facts.get('load_after', '?')}. The machine is shared with other work (test suites of "
        "other engineers may run at the same time), so compare ratios, not absolute figures."
    )
    add(f"- Python {facts['python']}; {facts['wrk']}; PostgreSQL: {results.get('pg_version', '?')}")
    add(f"- packages: {facts['packages']}")
    add(f"- anonid commit: {facts['commit']}")
    add("")
    add("## Method")
    add("")
    add(
        "The runner starts, in one run on this machine: **anonid** (`anonid serve`, one uvicorn "
        "worker, against a fresh database on the PostgreSQL service that the runner creates, "
        "migrates with `anonid migrate` and drops at the end), the **yardstick** "
        "(`bench/yardstick.py`: Starlette on raw asyncpg, only the essential work per request) and "
        "the documented minimal **fastapi-users** app (`bench/fastapi_users_app.py`: SQLAlchemy, JWT "
        "strategy, bearer transport), each with its own database on the same PostgreSQL. The "
        "yardstick and fastapi-users run with uvicorn's access log off; anonid keeps its own "
        "access log, metrics, request ids, CSRF guard and rate limiter (limits raised to "
        "100000/second because every request comes from one IP)."
    )
    add("")
    add(
        f"wrk (one thread, 32 connections, {mode.seconds} s per run, {mode.warmup} s unrecorded "
        f"warm-up per target) drives each target in turn, alternating A B A B for {mode.rounds} "
        "rounds; the table gives the median of the rounds for each figure. Before each run (warm-up "
        "included), outside its measurement, every system's database is vacuumed and analysed "
        "(`VACUUM (ANALYZE)`), so no run pays for the dead rows of the one before it. GET and "
        "PATCH use a pool "
        f"of {mode.pool} pre-created sessions, walked round robin (anonid and the yardstick: "
        f"session cookie; fastapi-users: `Authorization: Bearer`, {mode.fau_pool} registered users). "
        "PATCH sends a two-key merge patch. Latencies are wrk's, in milliseconds. *Server CPU "
        "µs/req* is the on-CPU time of the server's processes during the run "
        "(`/proc/<pid>/task/*/schedstat`) divided by the requests served; it leaves out "
        "PostgreSQL and wrk, and moves less with the machine's load than requests per second."
    )
    add("")
    rows, checks = _main_rows(results)
    if rows:
        add("## Hot paths side by side (32 connections, one worker each)")
        add("")
        add(
            "| endpoint | system | req/s | p50 ms | p99 ms | server CPU µs/req | req/s ÷ yardstick "
            "| p99 ÷ yardstick | CPU ÷ yardstick | errors |"
        )
        add("|---|---|---|---|---|---|---|---|---|---|")
        out.extend(rows)
        add("")
    checks.extend(_extra_checks(results))
    if checks:
        add("## Targets")
        add("")
        add("| target | measured | verdict |")
        add("|---|---|---|")
        out.extend(checks)
        add("")
    _extras(results, add)
    _hooks(results, add)
    _profile(results, add)
    if "main" in results or "hooks" in results:
        add("## Every round")
        add("")
        out.extend(_rounds({**results.get("main", {}), **results.get("hooks", {})}))
        add("")
    if results.get("problems"):
        add("## Problems seen during the run")
        add("")
        for problem in results["problems"]:
            add(f"- {problem}")
        add("")
    if "failure" in results:
        add("## The run failed")
        add("")
        add(f"`{results['failure']}`")
        add("")
    if NOTES.exists():
        add("## Analysis (from `bench/NOTES.md`, written by hand)")
        add("")
        add(NOTES.read_text().strip())
        add("")
    return "\n".join(out) + "\n"


def _extra_checks(results: dict[str, Any]) -> list[str]:
    checks = []
    c = results.get("cull")
    if c:
        cull_rate = c["cull_rows"] / c["cull_seconds"]
        plain_rate = c["plain_rows"] / c["plain_seconds"]
        r = cull_rate / plain_rate
        checks.append(
            f"| cull rows/s ≥ 0.5 × one plain `DELETE … WHERE` | {r:.2f} × ({cull_rate:.0f} vs {plain_rate:.0f} rows/s) | {_verdict(r >= 0.5)} |"
        )
        p = c["during"]["p99_ms"] / c["without"]["p99_ms"]
        checks.append(
            f"| POST /v1/anonymous p99 during the cull ≤ 2 × without | {p:.2f} × ({_ms(c['during']['p99_ms'])} vs {_ms(c['without']['p99_ms'])} ms) | {_verdict(p <= 2)} |"
        )
    e = results.get("email")
    if e and "skipped" not in e:
        checks.append(
            f"| email latency p50 ≤ 50 ms at 50 conversions/s | {e['p50_ms']:.1f} ms | {_verdict(e['p50_ms'] <= 50)} |"
        )
        checks.append(
            f"| email latency p99 ≤ 250 ms at 50 conversions/s | {e['p99_ms']:.1f} ms | {_verdict(e['p99_ms'] <= 250)} |"
        )
    elif e:
        checks.append(
            f"| email latency at 50 conversions/s | not measured: {e['skipped']} | **missed** |"
        )
    a = results.get("argon2")
    if a:
        p = a["loaded"]["p99_ms"] / a["idle"]["p99_ms"]
        checks.append(
            f"| GET /v1/me p99 with 20 logins/s ≤ 2 × idle | {p:.2f} × ({_ms(a['loaded']['p99_ms'])} vs {_ms(a['idle']['p99_ms'])} ms) | {_verdict(p <= 2)} |"
        )
    m = results.get("memory")
    if m:
        mib = m["rss_second_kib"] / 1024
        growth = (m["rss_second_kib"] - m["rss_first_kib"]) / 1024
        total = 2 * m["half"]
        checks.append(
            f"| worker RSS after {total:,} mixed requests ≤ 150 MB | {mib:.1f} MiB | {_verdict(mib * 1.048576 <= 150)} |"
        )
        # "No growth": the second half may not add more than 1 MiB (allocator noise).
        checks.append(
            f"| no RSS growth between the first and second {m['half']:,} | {growth:+.1f} MiB | {_verdict(growth <= 1.0)} |"
        )
    return checks


def paced_table(add: Any, rows: list[tuple[str, dict[str, float]]]) -> None:
    """A paced load's figures (``extras.summary``), one row per condition."""
    add("| | req/s | p50 ms | p99 ms | errors |")
    add("|---|---|---|---|---|")
    for label, r in rows:
        add(f"| {label} | {r['rps']:.0f} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | {r['bad']} |")
    add("")


def _extras(results: dict[str, Any], add: Any) -> None:
    s = results.get("scaling")
    if s:
        add("## Scaling: `--workers 2` against `--workers 1`")
        add("")
        add(
            "Both servers run at once on the same database; wrk alternates between them. The machine "
            "has 2 cores shared by the workers, PostgreSQL and wrk itself."
        )
        add("")
        add("| endpoint | workers | req/s | p50 ms | p99 ms | req/s ÷ one worker |")
        add("|---|---|---|---|---|---|")
        for endpoint, systems in s.items():
            one = statistics.median(r.rps for r in systems["--workers 1"])
            for label, runs in systems.items():
                rps = statistics.median(r.rps for r in runs)
                add(
                    f"| {endpoint} | {label} | {rps:.0f} | {_ms(statistics.median(r.p50_ms for r in runs))} | {_ms(statistics.median(r.p99_ms for r in runs))} | {rps / one:.2f} |"
                )
        add("")
    c = results.get("cull")
    if c:
        add("## Cull")
        add("")
        add(
            f"{c['stale']:,} stale anonymous accounts (untouched 41–341 days) among {c['total']:,} "
            "(the rest touched within 29 days), the table refilled identically (TRUNCATE, INSERT, "
            "VACUUM ANALYZE) before each measurement. The plain statement is "
            "`DELETE FROM users WHERE is_anonymous AND updated_at < now() - 40 days` in one "
            "transaction; anonid's cull is `run_cull` (what `anonid cull` and the worker run): "
            "batches of 1,000 under an advisory lock, each its own transaction with its "
            "`user.culled` event."
        )
        add("")
        add("| | rows | seconds | rows/s |")
        add("|---|---|---|---|")
        add(
            f"| one plain `DELETE … WHERE` | {c['plain_rows']:,} | {c['plain_seconds']:.2f} | {c['plain_rows'] / c['plain_seconds']:.0f} |"
        )
        add(
            f"| anonid cull ({c['cull_batches']} batches) | {c['cull_rows']:,} | {c['cull_seconds']:.2f} | {c['cull_rows'] / c['cull_seconds']:.0f} |"
        )
        add(
            f"| anonid cull while serving the paced load below | {c['cull_under_load_rows']:,} | {c['cull_under_load_seconds']:.2f} | {c['cull_under_load_rows'] / c['cull_under_load_seconds']:.0f} |"
        )
        add("")
        add(
            f"`POST /v1/anonymous` under a paced load (16 connections, ≈{c['paced_rps']:.0f} req/s "
            f"offered, {c['load_seconds']} s), without and during the cull"
            + ("" if c["cull_outlasted_load"] else " (**the cull ended before the load did**)")
            + ":"
        )
        add("")
        paced_table(add, [(f"{label} the cull", c[label]) for label in ("without", "during")])
    e = results.get("email")
    if e:
        add("## Email latency")
        add("")
        if "skipped" in e:
            add(f"Not measured: {e['skipped']}.")
        else:
            add(
                f"{e['conversions']} `POST /v1/me/conversion` at 50/s for {e['seconds']} s "
                f"({e['accepted_202']} answered 202); time from the response reaching the client "
                "to the runner's aiosmtpd server accepting the message (250 after DATA), both clocked "
                "in the runner process. anonid's in-process outbox worker delivers."
            )
            add("")
            add("| emails | p50 ms | p99 ms | max ms |")
            add("|---|---|---|---|")
            add(f"| {e['emails']} | {e['p50_ms']:.1f} | {e['p99_ms']:.1f} | {e['max_ms']:.1f} |")
        add("")
    a = results.get("argon2")
    if a:
        add("## argon2 isolation")
        add("")
        add(
            f"`GET /v1/me` under a paced load (16 connections, ≈{a['paced_rps']:.0f} req/s offered, "
            f"{a['seconds']} s), idle and while 20 `POST /v1/login` per second run (argon2id, "
            f"m=19 MiB, t=2, p=1; {a['logins_ok']}/{a['logins']} logins succeeded, login p50 "
            f"{a['login_p50_ms']:.0f} ms, p99 {a['login_p99_ms']:.0f} ms)."
        )
        add("")
        paced_table(add, [("idle", a["idle"]), ("with 20 logins/s", a["loaded"])])
    m = results.get("memory")
    if m:
        add("## Memory")
        add("")
        add(
            f"A freshly started worker, then {m['half']:,} + {m['half']:,} mixed requests (POST "
            "/v1/anonymous, GET /v1/me, PATCH /v1/me/data in turn; 32 connections). RSS is VmRSS "
            "of the `anonid serve` process."
        )
        add("")
        add("| when | RSS MiB |")
        add("|---|---|")
        add(f"| after start and the session pool | {m['rss_start_kib'] / 1024:.1f} |")
        add(f"| after {m['half']:,} requests | {m['rss_first_kib'] / 1024:.1f} |")
        add(f"| after {2 * m['half']:,} requests | {m['rss_second_kib'] / 1024:.1f} |")
        add("")


def _profile(results: dict[str, Any], add: Any) -> None:
    prof = results.get("profile")
    if not prof:
        return
    add("## Where anonid's time goes (py-spy under the same load)")
    add("")
    if "skipped" in prof:
        add(f"Not profiled: {prof['skipped']}.")
        add("")
        return
    add(
        "py-spy sampled the anonid worker at 200 Hz while wrk drove each endpoint at 32 "
        "connections. Shares of samples by the package of the innermost frame, then the "
        "innermost frames themselves (asyncpg's share includes its Cython protocol and the "
        "socket writes it makes; uvicorn's the writes of responses)."
    )
    add("")
    for endpoint, data in prof.items():
        if "skipped" in data:
            add(f"- {endpoint}: not profiled ({data['skipped']})")
            continue
        total = data["samples"] or 1
        add(f"**{endpoint}** ({data['samples']} samples)")
        add("")
        add("| package | share | | innermost frame | share |")
        add("|---|---|---|---|---|")
        for (pkg, n), (frame, m) in zip(data["packages"], data["frames"], strict=False):
            frame_text = frame.replace("|", "/")[:90]
            add(f"| {pkg} | {100 * n / total:.1f}% | | `{frame_text}` | {100 * m / total:.1f}% |")
        add("")


def _hooks(results: dict[str, Any], add: Any) -> None:
    h = results.get("hooks")
    if not h:
        return
    setup = results["hooks_setup"]
    add("## Abuse protection and hooks: what `POST /v1/anonymous` costs with them on")
    add("")
    add(
        "Beside the plain anonid server (*off*), two more on the same database: one with "
        "`ANONID_ANONYMOUS_CHALLENGE=altcha`, one with `ANONID_HOOKS=custom_claims` calling a "
        "local receiver (`bench/hook_receiver.py`: Starlette under its own uvicorn, checks the "
        "Standard Webhooks signature and answers the same two claims). wrk alternates off / on "
        "as in the main phase (32 connections, medians of the rounds). The challenge run measures "
        "the server's side only: before each run the runner issues challenges with anonid's own "
        "`issue` under the server's key and solves them (`altcha` package), "
        f"{setup['solutions']:,} in all, one unique solution per request, each verified and "
        "spent once by the server (maximum number "
        f"{setup['max_number']}: the check is one SHA-256 and one HMAC whatever the number). "
        "*Server CPU* is anonid's alone; the receiver's own CPU is not in it."
    )
    add("")
    add(
        "| endpoint | setting | req/s | p50 ms | p99 ms | server CPU µs/req | req/s ÷ off "
        "| p99 ÷ off | CPU ÷ off | errors |"
    )
    add("|---|---|---|---|---|---|---|---|---|---|")
    for endpoint, settings in h.items():
        m = {
            label: {
                "rps": statistics.median(r.rps for r in runs),
                "p50": statistics.median(r.p50_ms for r in runs),
                "p99": statistics.median(r.p99_ms for r in runs),
                "cpu": statistics.median(r.server_cpu_us or 0.0 for r in runs),
                "bad": sum(r.bad_status + r.errors for r in runs),
            }
            for label, runs in settings.items()
        }
        off = m["off"]
        for label, v in m.items():
            cpu_ratio = f"{v['cpu'] / off['cpu']:.2f}" if off["cpu"] else ""
            add(
                f"| {endpoint} | {label} | {v['rps']:.0f} | {_ms(v['p50'])} | {_ms(v['p99'])} "
                f"| {v['cpu']:.0f} | {v['rps'] / off['rps']:.2f} | {v['p99'] / off['p99']:.2f} "
                f"| {cpu_ratio} | {v['bad']} |"
            )
    add("")
