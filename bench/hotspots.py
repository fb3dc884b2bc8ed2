"""Where anonid's time goes under load: py-spy samples of the worker while wrk drives one endpoint.

The samples are wall-clock stacks of the worker's threads (idle waits in the event loop excluded
as far as py-spy can tell), aggregated two ways: by the package of the innermost frame, and by
innermost frame. They show shares, not absolute costs.
"""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from run import Bench

PACKAGE = re.compile(r"\(([^/):]+)/")
RATE = 200


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


def aggregate(raw: Path, top: int = 12) -> dict[str, Any]:
    by_package: collections.Counter[str] = collections.Counter()
    by_frame: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        leaf = stack.split(";")[-1]
        match = PACKAGE.search(leaf)
        by_package[match.group(1) if match else (leaf.split(" ")[0] or "(native)")] += n
        by_frame[leaf or "(native)"] += n
    return {
        "samples": total,
        "packages": by_package.most_common(top),
        "frames": by_frame.most_common(top),
    }


async def phase_profile(bench: Bench) -> None:
    spy = py_spy()
    if spy is None:
        bench.results["profile"] = {
            "skipped": "py-spy is not installed (pip install -e '.[bench]')"
        }
        return
    server = bench.servers["anonid"]
    assert server.proc is not None
    seconds = max(1, bench.mode.seconds)
    out: dict[str, Any] = {}
    targets: list[tuple[str, str, str, dict[str, str]]] = [
        ("POST /v1/anonymous", "/v1/anonymous", "post", {}),
        ("GET /v1/me", "/v1/me", "session", {"BENCH_METHOD": "GET"}),
        ("PATCH /v1/me/data", "/v1/me/data", "session", {"BENCH_METHOD": "PATCH"}),
    ]
    if bench.mode.name == "smoke":
        targets = targets[1:2]  # only that py-spy works here
    for label, path, script, env in targets:
        bench.log(f"phase profile: py-spy on anonid during {label}")
        raw = bench.work / f"profile-{path.strip('/').replace('/', '-')}.txt"
        load = asyncio.create_task(bench.wrk("anonid", path, script, seconds + 2, **env))
        await asyncio.sleep(1)
        proc = await asyncio.create_subprocess_exec(
            spy,
            "record",
            "--pid",
            str(server.proc.pid),
            "--duration",
            str(seconds),
            "--rate",
            str(RATE),
            "--format",
            "raw",
            "--nonblocking",
            "-o",
            str(raw),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        await load
        if proc.returncode != 0 or not raw.exists():
            out[label] = {"skipped": f"py-spy failed: {err.decode(errors='replace')[-300:]}"}
            continue
        out[label] = aggregate(raw)
    bench.results["profile"] = out
