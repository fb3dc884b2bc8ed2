"""Abuse protection (CONTRACT §16): an ALTCHA proof of work before a guest is made.

Solutions are computed with the ``altcha`` library's own solver, as a client would; the second
use of a solution is tried in another app on the same database and in a separate
``anonid serve`` process.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
from altcha.v1 import Payload, solve_challenge
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.hooks import challenge
from tests.account_support import bare_client
from tests.conftest import AppFactory
from tests.processes import Served, clean_env, free_port

CHALLENGE_ON = {"anonymous_challenge": "altcha", "challenge_max_number": 2000}


def solve(issued: dict[str, Any]) -> str:
    """The ``X-Anonid-Challenge`` value for a challenge: base64 of the solution JSON."""
    solution = solve_challenge(
        issued["challenge"], issued["salt"], issued["algorithm"], issued["maxnumber"]
    )
    assert solution is not None
    payload = Payload(
        issued["algorithm"],
        issued["challenge"],
        solution.number,
        issued["salt"],
        issued["signature"],
    )
    return payload.to_base64()


async def solved(client: httpx.AsyncClient) -> str:
    r = await client.get("/v1/challenge")
    assert r.status_code == 200, r.text
    return solve(r.json())


def key_of(app: FastAPI) -> bytes:
    return app.state.services.server_secrets[challenge.KEY_NAME]  # type: ignore[no-any-return]


async def _guests(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.text("SELECT count(*) FROM users WHERE is_anonymous")))


async def _spent(engine: AsyncEngine, header: str) -> int:
    digest = bytes.fromhex(orjson.loads(base64.b64decode(header))["challenge"])
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                sa.text("SELECT count(*) FROM spent_challenges WHERE challenge = :c"), {"c": digest}
            )
        )


async def test_challenges_are_off_by_default(app: FastAPI) -> None:
    async with bare_client(app) as c:
        r = await c.get("/v1/challenge")
        assert r.status_code == 404 and r.json()["error"] == "not_found"
        assert (await c.post("/v1/anonymous")).status_code == 201


async def test_a_challenge_has_the_altcha_format_and_is_never_cached(app_with: AppFactory) -> None:
    _, c = await app_with(**CHALLENGE_ON)
    r = await c.get("/v1/challenge")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    issued = r.json()
    assert set(issued) == {"algorithm", "challenge", "maxnumber", "salt", "signature"}
    assert issued["algorithm"] == "SHA-256" and issued["maxnumber"] == 2000
    assert "expires=" in issued["salt"]
    assert (await c.get("/v1/challenge")).json()["challenge"] != issued["challenge"]


async def test_a_solved_challenge_creates_one_guest_and_its_reuse_fails_in_another_app(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    _, c = await app_with(**CHALLENGE_ON)
    _, other = await app_with(**CHALLENGE_ON)
    header = await solved(c)
    before = await _guests(engine)

    r = await c.post("/v1/anonymous", headers={"X-Anonid-Challenge": header})
    assert r.status_code == 201, r.text
    assert r.json()["user"]["is_anonymous"] is True
    assert await _guests(engine) == before + 1
    assert await _spent(engine, header) == 1

    other.cookies.clear()
    again = await other.post("/v1/anonymous", headers={"X-Anonid-Challenge": header})
    assert again.status_code == 403 and again.json()["error"] == "challenge_failed"
    assert "set-cookie" not in again.headers
    assert await _guests(engine) == before + 1


async def test_a_solution_is_accepted_once_however_many_use_it_at_the_same_time(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    application, c = await app_with(**CHALLENGE_ON)
    header = await solved(c)
    before = await _guests(engine)

    async def attempt() -> int:
        async with bare_client(application) as device:
            r = await device.post("/v1/anonymous", headers={"X-Anonid-Challenge": header})
            return r.status_code

    statuses = await asyncio.gather(*(attempt() for _ in range(8)))
    assert sorted(statuses) == [201] + [403] * 7
    assert await _guests(engine) == before + 1


async def test_guests_paid_together_each_need_a_solution_of_their_own(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    """Requests arriving at once share statements (app.platform.coalesce): a solution used twice
    in one group still makes one guest, and every other solution its own."""
    application, c = await app_with(**CHALLENGE_ON)
    shared = await solved(c)
    own = [await solved(c) for _ in range(6)]
    before = await _guests(engine)

    async def attempt(header: str) -> tuple[str, int]:
        async with bare_client(application) as device:
            r = await device.post("/v1/anonymous", headers={"X-Anonid-Challenge": header})
            return header, r.status_code

    # The first two go alone (two lanes); the rest wait and go together, the shared one thrice.
    headers = [own[0], own[1], shared, *own[2:4], shared, *own[4:], shared]
    outcomes = await asyncio.gather(*(attempt(h) for h in headers))
    assert sorted(status for header, status in outcomes if header == shared) == [201, 403, 403]
    assert all(status == 201 for header, status in outcomes if header != shared)
    assert await _guests(engine) == before + 7


async def test_the_same_solution_is_refused_by_another_anonid_process(
    app_with: AppFactory, database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    _, c = await app_with(**CHALLENGE_ON)
    header = await solved(c)
    assert (
        await c.post("/v1/anonymous", headers={"X-Anonid-Challenge": header})
    ).status_code == 201
    env = clean_env(
        ANONID_DATABASE_URL=database_url,
        ANONID_DATA_DIR=str(tmp_path / "data"),
        ANONID_PUBLIC_URL="http://127.0.0.1:8000",
        ANONID_COOKIE_SECURE="false",
        ANONID_RUN_WORKER="false",
        ANONID_CULL_INTERVAL_MINUTES="0",
        ANONID_SMTP_URL="smtp://127.0.0.1:1",
        ANONID_ANONYMOUS_CHALLENGE="altcha",
        ANONID_CHALLENGE_MAX_NUMBER="2000",
    )
    served = Served(tmp_path, env, free_port(19100, 19150))
    try:
        await asyncio.to_thread(served.wait_ready)
        before = await _guests(engine)
        async with httpx.AsyncClient(base_url=served.base, timeout=10) as remote:
            again = await remote.post("/v1/anonymous", headers={"X-Anonid-Challenge": header})
            assert again.status_code == 403, again.text
            assert again.json()["error"] == "challenge_failed"
            # The other process shares the key: a challenge it issues is good here and there.
            fresh = await solved(remote)
            assert (
                await remote.post("/v1/anonymous", headers={"X-Anonid-Challenge": fresh})
            ).status_code == 201
        assert await _guests(engine) == before + 1
    finally:
        await asyncio.to_thread(served.stop)


async def test_a_missing_solution_is_challenge_required_and_writes_nothing(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    _, c = await app_with(**CHALLENGE_ON)
    before = await _guests(engine)
    for headers in ({}, {"X-Anonid-Challenge": ""}, {"X-Anonid-Challenge": "  "}):
        r = await c.post("/v1/anonymous", headers=headers)
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "challenge_required"
        assert "set-cookie" not in r.headers
    assert await _guests(engine) == before


async def test_a_solution_for_another_server_key_fails(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    _, c = await app_with(**CHALLENGE_ON)
    foreign = challenge.issue(secrets.token_bytes(32), 2000)
    before = await _guests(engine)
    r = await c.post("/v1/anonymous", headers={"X-Anonid-Challenge": solve(foreign)})
    assert r.status_code == 403 and r.json()["error"] == "challenge_failed"
    assert await _guests(engine) == before


async def test_an_expired_solution_fails_even_with_the_right_key(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    application, c = await app_with(**CHALLENGE_ON)
    expired = challenge.issue(key_of(application), 2000, ttl=-timedelta(seconds=1))
    before = await _guests(engine)
    r = await c.post("/v1/anonymous", headers={"X-Anonid-Challenge": solve(expired)})
    assert r.status_code == 403 and r.json()["error"] == "challenge_failed"
    assert "expired" in r.json()["message"]
    # Moving the expiry forward changes the hash the solution must reproduce.
    fresh = (await c.get("/v1/challenge")).json()
    document = orjson.loads(base64.b64decode(solve(fresh)))
    document["salt"] = document["salt"].replace("expires=", "expires=9")
    forged = base64.b64encode(orjson.dumps(document)).decode()
    r = await c.post("/v1/anonymous", headers={"X-Anonid-Challenge": forged})
    assert r.status_code == 403 and r.json()["error"] == "challenge_failed"
    assert await _guests(engine) == before


async def test_a_wrong_number_or_a_malformed_header_fails_without_an_error(
    app_with: AppFactory,
) -> None:
    _, c = await app_with(**CHALLENGE_ON)
    document = orjson.loads(base64.b64decode(await solved(c)))
    wrong = {**document, "number": document["number"] + 1}
    malformed = [
        base64.b64encode(orjson.dumps(wrong)).decode(),
        base64.b64encode(orjson.dumps({**document, "number": str(document["number"])})).decode(),
        base64.b64encode(orjson.dumps({**document, "algorithm": "SHA-1"})).decode(),
        base64.b64encode(b"[1, 2]").decode(),
        base64.b64encode(b"not json").decode(),
        "%%% not base64",
        "A" * 5000,
    ]
    for header in malformed:
        r = await c.post("/v1/anonymous", headers={"X-Anonid-Challenge": header})
        assert r.status_code == 403, (header, r.text)
        assert r.json()["error"] == "challenge_failed"


async def test_a_valid_session_needs_no_challenge(app_with: AppFactory) -> None:
    _, c = await app_with(**CHALLENGE_ON)
    r = await c.post("/v1/anonymous", headers={"X-Anonid-Challenge": await solved(c)})
    assert r.status_code == 201
    again = await c.post("/v1/anonymous")
    assert again.status_code == 200
    assert again.json()["user"]["id"] == r.json()["user"]["id"]


async def test_browsers_on_an_allowed_origin_may_send_the_challenge_header(
    app_with: AppFactory,
) -> None:
    _, c = await app_with(**CHALLENGE_ON, allowed_origins="https://shop.test")
    r = await c.options(
        "/v1/anonymous",
        headers={
            "Origin": "https://shop.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-anonid-challenge",
        },
    )
    assert r.status_code == 200
    assert "x-anonid-challenge" in r.headers["access-control-allow-headers"].lower()
