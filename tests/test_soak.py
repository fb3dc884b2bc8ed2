"""Soak: minutes of mixed load against a real ``anonid serve``: zero 5xx, flat memory.

Kept out of the default run (marker ``soak``). Five minutes, the documented form::

    python -m pytest -q -m soak tests/test_soak.py -s

One minute, the form CI runs::

    ANONID_SOAK_SECONDS=60 python -m pytest -q -m soak tests/test_soak.py -s
"""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
import pytest

from tests.fault_support import PASSWORD, PORTS, StallableMailServer, base_env, register, serve
from tests.outbox_support import private_database
from tests.processes import free_port

pytestmark = pytest.mark.soak

SECONDS = float(os.environ.get("ANONID_SOAK_SECONDS", "300"))
CLIENTS = 4
SAMPLE_EVERY = 2.0
# Growth allowed between the first and the last quarter of the run, after a warm-up.
RSS_GROWTH_BYTES = 32 * 1024 * 1024
BEARER = {"X-Anonid-Token": "bearer"}


async def _load(
    c: httpx.AsyncClient, n: int, until: float, login_email: str, statuses: Counter[str]
) -> None:
    failures: list[str] = []
    for i in itertools.count():
        if time.monotonic() >= until:
            return
        try:
            r = await c.post("/v1/anonymous", headers=BEARER)
            statuses[f"create {r.status_code}"] += 1
            if r.status_code != 201:
                failures.append(r.text)
                continue
            auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
            for j in range(5):
                r = await c.patch("/v1/me/data", json={f"k{j}": {"n": j, "i": i}}, headers=auth)
                statuses[f"patch {r.status_code}"] += 1
                r = await c.get("/v1/me", headers=auth)
                statuses[f"me {r.status_code}"] += 1
            if i % 3 == 0:
                r = await c.post(
                    "/v1/me/conversion", json={"email": f"soak-{n}-{i}@example.com"}, headers=auth
                )
                statuses[f"conversion {r.status_code}"] += 1
            if i % 10 == 0:
                r = await c.post(
                    "/v1/login", json={"email": login_email, "password": PASSWORD}, headers=BEARER
                )
                statuses[f"login {r.status_code}"] += 1
        except httpx.HTTPError as exc:
            statuses[f"transport {type(exc).__name__}"] += 1
            await asyncio.sleep(0.1)


async def test_mixed_load_has_no_5xx_and_flat_memory(server_url: str, tmp_path: Path) -> None:
    mail = StallableMailServer()
    port = free_port(*PORTS)
    async with private_database(server_url) as url:
        served = serve(tmp_path, base_env(url, mail.url, port), port)
        try:
            process = psutil.Process(served.proc.pid)
            async with httpx.AsyncClient(base_url=served.base, timeout=30) as c:
                login_email = "soak@example.com"
                await register(c, mail, login_email)
                statuses: Counter[str] = Counter()
                started = time.monotonic()
                end = started + SECONDS
                load = [
                    asyncio.create_task(_load(c, n, end, login_email, statuses))
                    for n in range(CLIENTS)
                ]
                samples: list[int] = []
                while time.monotonic() < end:
                    samples.append(process.memory_info().rss)
                    await asyncio.sleep(SAMPLE_EVERY)
                await asyncio.gather(*load)
                elapsed = time.monotonic() - started
        finally:
            served.stop()
            mail.stop()

    total = sum(statuses.values())
    print(f"\nsoak: {total} requests in {elapsed:.0f}s ({total / elapsed:.0f}/s), {dict(statuses)}")
    warm = samples[len(samples) // 5 :]  # the first fifth warms caches and pools
    quarter = max(1, len(warm) // 4)
    first, last = statistics.median(warm[:quarter]), statistics.median(warm[-quarter:])
    mib = 1024 * 1024
    print(
        f"soak: RSS {first / mib:.1f} MiB -> {last / mib:.1f} MiB, peak {max(samples) / mib:.1f} MiB"
    )

    assert not [k for k in statuses if k.split()[1].startswith("5")], statuses
    assert not [k for k in statuses if k.startswith("transport")], statuses
    for kind, ok in (
        ("create", 201),
        ("patch", 200),
        ("me", 200),
        ("conversion", 202),
        ("login", 200),
    ):
        assert statuses[f"{kind} {ok}"] > 0, statuses
    assert last - first < RSS_GROWTH_BYTES, f"RSS grew {(last - first) / mib:.1f} MiB"
