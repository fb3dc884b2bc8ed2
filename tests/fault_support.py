"""Helpers for the fault, multi-process and soak tests: real processes, a stallable SMTP server.

Ports for servers started here come from ``PORTS`` (this area's range).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
import time
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiosmtpd.controller import Controller

from tests.mailserver import MailServer
from tests.processes import ANONID, Served, clean_env, free_port, terminate

PORTS = (18600, 18800)
PASSWORD = "plum orchard sailing 1987"


class _Stallable:
    def __init__(self, server: StallableMailServer) -> None:
        self.server = server

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.server.stalling.is_set():
            # Hold the delivery open, as a slow or hung SMTP server would, then refuse it.
            self.server.stalled.set()
            while self.server.stalling.is_set():
                await asyncio.sleep(0.05)
            return "451 4.3.0 try again later"
        raw = envelope.original_content or envelope.content
        msg = message_from_bytes(raw, policy=email_policy.default)
        assert isinstance(msg, EmailMessage)
        self.server.messages.append(msg)
        return "250 OK"


class StallableMailServer(MailServer):
    """A plain SMTP server whose DATA can be held open to catch a worker mid-delivery.

    ``stalling.set()`` makes every DATA wait (``stalled`` is set once one does) until
    ``stalling.clear()``, and the held message is then refused, never recorded.
    """

    def __init__(self, port: int | None = None) -> None:
        self.stalling = threading.Event()
        self.stalled = threading.Event()
        super().__init__(port or free_port(*PORTS))

    def start(self) -> None:
        if self._controller is not None:
            return
        controller = Controller(_Stallable(self), hostname=self.host, port=self.port)
        controller.start()
        self._controller = controller

    def count_to(self, address: str) -> int:
        return sum(1 for m in self.messages if m["To"] == address)


def base_env(database_url: str, smtp_url: str, port: int, **extra: str) -> dict[str, str]:
    """Settings for a subprocess on an external database; rate limits out of the way unless set."""
    values = {
        "ANONID_DATABASE_URL": database_url,
        "ANONID_SMTP_URL": smtp_url,
        "ANONID_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "ANONID_COOKIE_SECURE": "false",
        "ANONID_CULL_INTERVAL_MINUTES": "0",
        "ANONID_ANONYMOUS_RATE_LIMIT": "1000000/minute",
        "ANONID_LOGIN_RATE_LIMIT": "1000000/minute",
        "ANONID_DATA_RATE_LIMIT": "1000000/minute",
        "ANONID_LOG_FORMAT": "json",
    }
    values.update(extra)
    return clean_env(**values)


def serve(cwd: Path, env: dict[str, str], port: int) -> Served:
    served = Served(cwd, env, port)
    try:
        served.wait_ready()
    except BaseException:
        served.stop()
        raise
    return served


class Worker:
    """``anonid worker`` in the background, with its output in a log file."""

    def __init__(self, cwd: Path, env: dict[str, str], name: str = "worker") -> None:
        self.log = cwd / f"{name}-{time.monotonic_ns()}.log"
        self._log = self.log.open("w")
        self.proc = subprocess.Popen(
            [ANONID, "worker"], cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def stop(self) -> int:
        code = terminate(self.proc)
        self._log.close()
        return code


async def until(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll an async (or plain) predicate until it holds; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        await asyncio.sleep(0.05)


async def fetch(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def new_guest(c: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    """A new anonymous account: its id and the bearer header that carries its session."""
    r = await c.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})
    assert r.status_code == 201, r.text
    body = r.json()
    return body["user"]["id"], {"Authorization": f"Bearer {body['access_token']}"}


async def register(
    c: httpx.AsyncClient, mail: MailServer, email: str, password: str = PASSWORD
) -> dict[str, str]:
    """A registered account made the way a user makes one: guest, conversion, setup link."""
    from urllib.parse import parse_qs, urlsplit

    from tests.mailserver import links_in

    _, auth = await new_guest(c)
    r = await c.post("/v1/me/conversion", json={"email": email}, headers=auth)
    assert r.status_code == 202, r.text
    msg = await mail.wait_for(lambda m: m["To"] == email, timeout=30)
    token = parse_qs(urlsplit(links_in(msg)[0]).query)["token"][0]
    r = await c.post(
        "/v1/password-setup",
        json={"token": token, "password": password},
        headers={"X-Anonid-Token": "bearer"},
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}
