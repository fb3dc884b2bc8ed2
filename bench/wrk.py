"""Driving wrk: one run is one subprocess whose Lua ``done()`` prints a JSON summary line."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import statistics
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).resolve().parent / "lua"
MARKER = "BENCH_RESULT "


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # socket errors and timeouts
    bad_status: int  # responses with status >= 400
    server_cpu_us: float | None = None  # on-CPU time of the server's processes per request

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed: apt-get install -y wrk (Debian's package)")
    return path


async def run_wrk(
    url: str,
    script: str,
    *,
    seconds: float,
    connections: int = 32,
    threads: int = 1,
    env: dict[str, str] | None = None,
    timeout_s: int = 10,
) -> WrkResult:
    """Run wrk against ``url`` with ``bench/lua/<script>.lua``; its summary, parsed."""
    command = [
        wrk_binary(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_s}s",
        "-s",
        str(LUA / f"{script}.lua"),
        url,
    ]
    proc = await asyncio.create_subprocess_exec(
        *command,
        env={**os.environ, "BENCH_LUA_DIR": str(LUA), **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    # A script that stops after N responses prints a marker; wrk itself would still sleep for
    # the rest of -d, so interrupt it (SIGINT makes wrk print its summary and exit).
    async for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip("\n")
        lines.append(line)
        if line == "BENCH_STOPPED" and proc.returncode is None:
            proc.send_signal(signal.SIGINT)
    err = await proc.stderr.read()
    await proc.wait()
    text = "\n".join(lines)
    line = next((ln for ln in text.splitlines() if ln.startswith(MARKER)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {text[-500:]} {err.decode()[-500:]}")
    data = json.loads(line[len(MARKER) :])
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        errors=data["connect_errors"]
        + data["read_errors"]
        + data["write_errors"]
        + data["timeouts"],
        bad_status=data["bad_status"],
    )


def median_of(results: list[WrkResult]) -> dict[str, float]:
    """Per-metric medians over rounds (each metric on its own)."""
    return {
        "rps": statistics.median(r.rps for r in results),
        "p50_ms": statistics.median(r.p50_ms for r in results),
        "p99_ms": statistics.median(r.p99_ms for r in results),
        "requests": sum(r.requests for r in results),
        "bad": sum(r.bad_status + r.errors for r in results),
    }
