"""``bench/scale.py --smoke``: every phase of the scale benchmark runs and reports a figure.

The figures themselves are not judged here (20,000 accounts say nothing about 20 million); the
test proves the runner builds, serves, measures and cleans up, so the full run does not fail an
hour in. The retention phase measures ``app.outbox.retention.remove_expired``; in a tree without
that module the phase must say so by name, and the other phases must still report.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests.browser import ensure_debian_package
from tests.conftest import _asyncpg_dsn, _with_database

ROOT = Path(__file__).resolve().parent.parent
READS = (
    "GET /v1/admin/stats",
    "GET /metrics",
    "users?state=anonymous",
    "users?state=pending",
    "users?state=registered",
    "users?inactive_days=45",
    "users?email=<an existing address>",
    "users?inactive_days=45&cursor=<second page>",
)


async def _scale_databases(admin_url: str) -> list[str]:
    conn = await asyncpg.connect(_asyncpg_dsn(admin_url))
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE 'anonid\\_scale%' "
            "OR datname LIKE 'anonid\\_bench\\_scale%'"
        )
    finally:
        await conn.close()
    return sorted(r["datname"] for r in rows)


async def test_scale_smoke_reports_a_figure_for_every_phase_and_drops_its_databases(
    server_url: str,
) -> None:
    ensure_debian_package("/usr/bin/wrk", "wrk")
    admin_url = _with_database(server_url, "postgres")
    before = await _scale_databases(admin_url)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "bench/scale.py", "--smoke", "--pg-url", admin_url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout
    assert "## Scale: 20,000 accounts and 50,000 events" in out, done.stderr[-2000:]
    # The build, and each measuring phase, with a figure where the section puts it.
    assert "| 20,000 | 50,0" in out
    for endpoint in ("POST /v1/anonymous", "GET /v1/me", "PATCH /v1/me/data"):
        assert f"| {endpoint} throughput, big ÷ empty database ≥ 0.9 |" in out
        assert f"| {endpoint} | big database |" in out and f"| {endpoint} | empty database |" in out
    for read in READS:
        assert f"| `{read}` p99 < 100 ms | " in out
        assert f"| `{read}` | 20 | none |" in out  # 20 requests, back to back
    assert "| without the cull |" in out and "| during the cull |" in out
    assert "rows/s**" in out
    assert "| users | " in out and "| events | " in out
    if importlib.util.find_spec("app.outbox.retention") is not None:
        assert "### Retention: a day of events" in out
        assert "| retention |" not in out
        assert done.returncode == 0, out[-3000:] + done.stderr[-2000:]
    else:
        assert "- **retention**: app.outbox.retention is missing from this tree" in out
        assert "| retention | not measured (see below) | **failed** |" in out
        assert done.returncode == 1
        # Only the retention phase failed.
        assert out.count("**failed**") == 1
    assert await _scale_databases(admin_url) == before
