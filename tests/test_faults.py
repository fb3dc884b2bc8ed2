"""Fault injection against real processes: PostgreSQL stopped under load, a worker killed with
SIGKILL mid-delivery, ``anonid serve`` stopped with SIGTERM while a request is in flight.

Each test starts its own embedded PostgreSQL and its own SMTP server.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.platform.db import upgrade_to_head
from tests.conftest import client_for, make_settings, running_app
from tests.fault_support import (
    PASSWORD,
    PORTS,
    StallableMailServer,
    Worker,
    base_env,
    fetch,
    new_guest,
    register,
    serve,
    until,
)
from tests.pgcontrol import PrivatePostgres
from tests.processes import free_port

RECOVERY_SECONDS = 5.0
# Every session in the body: the shared client must not carry a cookie from one loop to another.
BEARER = {"X-Anonid-Token": "bearer"}


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[tuple[PrivatePostgres, str]]:
    server = await asyncio.to_thread(PrivatePostgres, tmp_path / "pg")
    url = server.url  # read while it runs: the URL comes from postmaster.pid
    await asyncio.to_thread(upgrade_to_head, url)
    yield server, url
    await asyncio.to_thread(server.close)


@pytest.fixture
def mail() -> Any:
    server = StallableMailServer()
    yield server
    server.stalling.clear()
    server.stop()


# --- PostgreSQL stopped and restarted under a steady load ------------------------------------


@dataclass
class Ledger:
    """What the service acknowledged, and anything it must never have answered."""

    created: set[str] = field(default_factory=set)
    patched: dict[str, dict[str, int]] = field(default_factory=dict)
    conversions: dict[str, str] = field(default_factory=dict)  # address -> user id
    logins: int = 0
    unavailable: int = 0
    violations: list[str] = field(default_factory=list)

    def check(self, what: str, r: httpx.Response, *ok: int) -> bool:
        """True for a success; a 503 must be ``unavailable`` with ``Retry-After``."""
        if r.status_code in ok:
            return True
        if r.status_code == 503:
            body = r.json()
            retry = r.headers.get("retry-after", "")
            if body.get("error") != "unavailable" or not retry.isdigit() or int(retry) <= 0:
                self.violations.append(f"{what}: bad 503 {r.headers} {r.text}")
            self.unavailable += 1
            return False
        self.violations.append(f"{what}: {r.status_code} {r.text[:200]}")
        return False


async def _client_loop(
    c: httpx.AsyncClient, ledger: Ledger, stop: asyncio.Event, n: int, login_email: str
) -> None:
    seq = itertools.count()
    auth: dict[str, str] | None = None
    user: str | None = None
    while not stop.is_set():
        i = next(seq)
        try:
            if auth is None or i % 10 == 0:
                r = await c.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})
                if ledger.check("create", r, 201):
                    body = r.json()
                    user = body["user"]["id"]
                    ledger.created.add(user)
                    auth = {"Authorization": f"Bearer {body['access_token']}"}
                    ledger.patched[user] = {}
                if auth is None:
                    await asyncio.sleep(0.05)
                    continue
            assert user is not None
            r = await c.get("/v1/me", headers=auth)
            ledger.check("me", r, 200)
            key = f"c{n}k{i}"
            r = await c.patch(
                "/v1/me/data",
                json={key: i},
                headers={**auth, "Content-Type": "application/merge-patch+json"},
            )
            if ledger.check("patch", r, 200):
                ledger.patched[user][key] = i
            if i % 5 == 0:
                address = f"load-{n}-{i}@example.com"
                r = await c.post("/v1/me/conversion", json={"email": address}, headers=auth)
                if ledger.check("conversion", r, 202):
                    ledger.conversions[address] = user
            if i % 25 == 0:
                r = await c.post(
                    "/v1/login", json={"email": login_email, "password": PASSWORD}, headers=BEARER
                )
                if ledger.check("login", r, 200):
                    ledger.logins += 1
        except httpx.HTTPError as exc:
            # A timeout or a dropped connection is a hang or a crash, never acceptable.
            ledger.violations.append(f"transport: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.1)


async def _full_round(c: httpx.AsyncClient, login_email: str) -> bool:
    """One of each request kind, all successful."""
    try:
        r = await c.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})
        if r.status_code != 201:
            return False
        auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
        ok = (await c.get("/v1/me", headers=auth)).status_code == 200
        ok = ok and (await c.patch("/v1/me/data", json={"r": 1}, headers=auth)).status_code == 200
        address = f"probe-{time.monotonic_ns()}@example.com"
        ok = (
            ok
            and (
                await c.post("/v1/me/conversion", json={"email": address}, headers=auth)
            ).status_code
            == 202
        )
        login = await c.post(
            "/v1/login", json={"email": login_email, "password": PASSWORD}, headers=BEARER
        )
        return ok and login.status_code == 200
    except httpx.HTTPError:
        return False


async def test_postgres_restart_under_load_gives_only_503_then_full_service_and_loses_no_write(
    pg: tuple[PrivatePostgres, str], mail: StallableMailServer, tmp_path: Path
) -> None:
    server, url = pg
    port = free_port(*PORTS)
    served = serve(tmp_path, base_env(url, mail.url, port), port)
    try:
        async with httpx.AsyncClient(base_url=served.base, timeout=15) as c:
            login_email = "steady@example.com"
            await register(c, mail, login_email)
            ledger = Ledger()
            stop = asyncio.Event()
            clients = [
                asyncio.create_task(_client_loop(c, ledger, stop, n, login_email)) for n in range(4)
            ]
            await until(lambda: len(ledger.created) >= 8 or ledger.violations, what="load running")
            assert ledger.violations == [], ledger.violations[:5]
            before = ledger.unavailable

            await asyncio.to_thread(server.stop)
            await until(lambda: ledger.unavailable > before + 20, what="503s while down")
            await asyncio.sleep(1.0)
            await asyncio.to_thread(server.start)
            returned = time.monotonic()
            await until(lambda: _full_round(c, login_email), timeout=30, what="full service")
            recovery = time.monotonic() - returned
            writes_after = len(ledger.created)
            await until(lambda: len(ledger.created) >= writes_after + 8, what="load after")
            stop.set()
            await asyncio.gather(*clients)
    finally:
        served.stop()

    assert ledger.violations == []
    assert recovery < RECOVERY_SECONDS, f"full service {recovery:.2f}s after PostgreSQL returned"
    assert ledger.logins > 0 and ledger.conversions

    # Every acknowledged write is in the database.
    rows = await fetch(
        url, "SELECT id::text, data FROM users WHERE id = ANY($1::uuid[])", list(ledger.created)
    )
    stored = {row["id"]: row["data"] for row in rows}
    assert set(stored) == ledger.created
    for user, keys in ledger.patched.items():
        data = _as_dict(stored[user])
        assert {k: data.get(k) for k in keys} == keys, user
    queued = await fetch(url, "SELECT payload->>'to' AS to FROM outbox WHERE kind = 'email'")
    assert set(ledger.conversions) <= {row["to"] for row in queued}


def _as_dict(value: Any) -> dict[str, Any]:
    import json

    return json.loads(value) if isinstance(value, str) else dict(value)


# --- The worker killed with SIGKILL in the middle of a delivery --------------------------------


async def _outbox_row(url: str, address: str) -> asyncpg.Record | None:
    rows = await fetch(
        url,
        "SELECT id, sent_at, claimed_until, attempts FROM outbox WHERE payload->>'to' = $1",
        address,
    )
    return rows[0] if rows else None


async def _enqueue_conversion(url: str, address: str) -> None:
    """A conversion request through the app, which writes its email to the outbox."""
    async with running_app(make_settings(url)) as app, client_for(app) as c:
        _, auth = await new_guest(c)
        r = await c.post("/v1/me/conversion", json={"email": address}, headers=auth)
        assert r.status_code == 202, r.text


async def test_worker_killed_mid_delivery_delivers_after_restart_and_never_resends_an_acknowledged_row(
    pg: tuple[PrivatePostgres, str], mail: StallableMailServer, tmp_path: Path
) -> None:
    _, url = pg
    env = base_env(url, mail.url, 8000)
    first, second = "killed-mid-delivery@example.com", "after-restart@example.com"
    await _enqueue_conversion(url, first)

    mail.stalling.set()
    worker = Worker(tmp_path, env)
    try:
        await until(mail.stalled.is_set, what="delivery in progress")
        row = await _outbox_row(url, first)
        assert row is not None and row["sent_at"] is None and row["claimed_until"] is not None
    finally:
        worker.kill()
    # The claim outlives its holder until its lease runs out (minutes in production): run the
    # clock forward on that one lease instead of waiting for it.
    await fetch(
        url,
        "UPDATE outbox SET claimed_until = now() - interval '1 second' WHERE id = $1",
        row["id"],
    )
    mail.stalling.clear()

    worker = Worker(tmp_path, env)
    try:
        await mail.wait_for(lambda m: m["To"] == first, timeout=30)
        await until(lambda: _sent(url, first), what="delivery recorded")
    finally:
        worker.kill()  # again without warning, now that the row is acknowledged

    worker = Worker(tmp_path, env)
    try:
        await _enqueue_conversion(url, second)
        # The later email arriving shows the restarted worker has been through the outbox.
        await mail.wait_for(lambda m: m["To"] == second, timeout=30)
        await until(lambda: _sent(url, second), what="second delivery recorded")
    finally:
        assert worker.stop() == 0
    assert mail.count_to(first) == 1
    assert mail.count_to(second) == 1


async def _sent(url: str, address: str) -> bool:
    row = await _outbox_row(url, address)
    return row is not None and row["sent_at"] is not None


# --- Graceful shutdown on SIGTERM -----------------------------------------------------------


async def test_sigterm_lets_an_in_flight_request_finish_and_the_worker_hand_back_its_claim(
    pg: tuple[PrivatePostgres, str], mail: StallableMailServer, tmp_path: Path
) -> None:
    _, url = pg
    port = free_port(*PORTS)
    served = serve(tmp_path, base_env(url, mail.url, port), port)
    address = "in-flight-at-shutdown@example.com"
    blocker = await asyncpg.connect(url)
    try:
        async with httpx.AsyncClient(base_url=served.base, timeout=60) as c:
            user, auth = await new_guest(c)
            # The in-process worker is caught in the middle of sending this email.
            mail.stalling.set()
            r = await c.post("/v1/me/conversion", json={"email": address}, headers=auth)
            assert r.status_code == 202
            await until(mail.stalled.is_set, what="delivery in progress")

            # A slow request: its UPDATE waits on a row lock this test holds.
            lock = blocker.transaction()
            await lock.start()
            await blocker.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user)
            patch = asyncio.create_task(c.patch("/v1/me/data", json={"kept": "yes"}, headers=auth))
            await until(lambda: _waiting_on_lock(url), what="request waiting on the lock")

            served.proc.send_signal(15)
            await asyncio.sleep(1.0)
            assert served.proc.poll() is None, "serve exited with a request in flight"
            assert not patch.done()
            await lock.commit()
            r = await patch
            assert r.status_code == 200, r.text
            assert r.json() == {"data": {"kept": "yes"}}
        # Well within an orchestrator's usual 30 s grace period, whatever SMTP is doing.
        await asyncio.to_thread(served.proc.wait, 20)
        assert served.proc.returncode == 0, served.log.read_text()
    finally:
        mail.stalling.clear()
        await blocker.close()
        served.stop()

    row = await _outbox_row(url, address)
    assert row is not None
    assert row["sent_at"] is None and row["claimed_until"] is None, dict(row)
    assert row["attempts"] == 0
    stored = await fetch(url, "SELECT data FROM users WHERE id = $1::uuid", user)
    assert _as_dict(stored[0]["data"]) == {"kept": "yes"}


async def _waiting_on_lock(url: str) -> bool:
    rows = await fetch(
        url,
        "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE '%UPDATE users%'",
    )
    return bool(rows)
