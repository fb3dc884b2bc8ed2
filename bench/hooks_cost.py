"""The hooks phase (issue 21): what ``POST /v1/anonymous`` costs with the ALTCHA challenge on
(the server's side only) and with the ``custom_claims`` hook on, each beside the same run with
them off.

Two more anonid servers run on the run's database beside the plain one ("off"): one with
``ANONID_ANONYMOUS_CHALLENGE=altcha``, one with ``ANONID_HOOKS=custom_claims`` calling a local
receiver (``bench/hook_receiver.py``, its own uvicorn process). wrk alternates off / on as the
main phase does. The challenge's solutions are made before each run, never during one: challenges
issued by anonid's own ``app.hooks.challenge.issue`` under the server's ``altcha`` key (read from
its database), solved with the ``altcha`` package's solver, one unique solution per request
(``bench/lua/challenge.lua``), since each is accepted once.
"""

from __future__ import annotations

import base64
import math
import secrets
import socket
import statistics
from datetime import timedelta
from typing import TYPE_CHECKING

import asyncpg
import orjson
import pools
from servers import Server, uvicorn_command

if TYPE_CHECKING:
    from run import Bench

# Verifying costs one SHA-256 and one HMAC whatever the number; a small one keeps solving cheap.
CHALLENGE_MAX_NUMBER = 20
DEFAULT_RATE = 3000.0  # req/s to provision solutions for when the main phase did not run
MAIN_HEADROOM = 2.0  # solutions per second of a run, over the main phase's anonid POST rate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def altcha_key(db_url: str) -> bytes:
    """The server's ALTCHA key, as every anonid process on this database loaded it."""
    conn = await asyncpg.connect(db_url)
    try:
        value = await conn.fetchval("SELECT value FROM server_secrets WHERE name = 'altcha'")
    finally:
        await conn.close()
    if value is None:
        raise RuntimeError("the anonid database has no altcha key")
    return bytes(value)


def solutions(key: bytes, count: int) -> list[str]:
    """``count`` solved challenges, each as the ``X-Anonid-Challenge`` header carries it."""
    from altcha.v1 import solve_challenge

    from app.hooks.challenge import issue

    out = []
    for _ in range(count):
        made = issue(key, CHALLENGE_MAX_NUMBER, ttl=timedelta(hours=2))
        solved = solve_challenge(
            made["challenge"], made["salt"], made["algorithm"], made["maxnumber"]
        )
        if solved is None:
            raise RuntimeError("could not solve a challenge anonid issued")
        payload = {
            "algorithm": made["algorithm"],
            "challenge": made["challenge"],
            "number": solved.number,
            "salt": made["salt"],
            "signature": made["signature"],
        }
        out.append(base64.b64encode(orjson.dumps(payload)).decode())
    return out


def solutions_rate(bench: Bench) -> float:
    main = bench.results.get("main", {}).get("POST /v1/anonymous", {}).get("anonid")
    return statistics.median(r.rps for r in main) * MAIN_HEADROOM if main else DEFAULT_RATE


async def phase_hooks(bench: Bench) -> None:
    bench.log("phase hooks: POST /v1/anonymous off / ALTCHA challenge on, off / custom_claims on")
    # The comparison servers are done; their pools would count against max_connections.
    for name in ("yardstick", "fastapi-users"):
        if name in bench.servers:
            bench.servers.pop(name).stop()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    port = free_port()
    receiver = Server(
        "hook-receiver",
        uvicorn_command("hook_receiver", port),
        port,
        {"HOOK_SECRET": secret},
        bench.work / "hook-receiver.log",
        ready_path="/",
    )
    await receiver.start()
    bench.servers["hook-receiver"] = receiver
    started = ["hook-receiver"]
    try:
        await bench.start_anonid(
            "anonid-challenge",
            extra_env={
                "ANONID_ANONYMOUS_CHALLENGE": "altcha",
                "ANONID_CHALLENGE_MAX_NUMBER": str(CHALLENGE_MAX_NUMBER),
            },
        )
        started.append("anonid-challenge")
        await bench.start_anonid(
            "anonid-claims",
            extra_env={
                "ANONID_HOOK_URL": f"{receiver.url}/hook",
                "ANONID_HOOK_SECRET": secret,
                "ANONID_HOOKS": "custom_claims",
            },
        )
        started.append("anonid-claims")
        key = await altcha_key(bench.results["anonid_db"])
        rate = solutions_rate(bench)
        pool = bench.work / "anonid-challenge.solutions"
        made = 0

        async def prepare(label: str, seconds: float) -> dict[str, str]:
            nonlocal made
            if label != "challenge on":
                return {}
            count = math.ceil(seconds * rate) + 64
            pools.write_tokens(pool, solutions(key, count))
            made += count
            return {"BENCH_TOKENS": str(pool)}

        challenge = await bench.alternate(
            [
                ("off", "anonid", "/v1/anonymous", "post", {}),
                ("challenge on", "anonid-challenge", "/v1/anonymous", "challenge", {}),
            ],
            bench.mode.rounds,
            prepare=prepare,
        )
        claims = await bench.alternate(
            [
                ("off", "anonid", "/v1/anonymous", "post", {}),
                ("custom_claims on", "anonid-claims", "/v1/anonymous", "post", {}),
            ],
            bench.mode.rounds,
        )
        bench.results["hooks"] = {
            "POST /v1/anonymous (ALTCHA)": challenge,
            "POST /v1/anonymous (custom_claims)": claims,
        }
        bench.results["hooks_setup"] = {
            "max_number": CHALLENGE_MAX_NUMBER,
            "solutions": made,
            "rate": rate,
        }
    finally:
        for name in started:
            bench.servers.pop(name).stop()
