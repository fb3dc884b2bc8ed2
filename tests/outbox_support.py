"""Helpers for the outbox tests: a private database, a running worker, a webhook receiver, TLS.

The outbox tests get their own migrated database (``private_database``): a worker delivers every
due row it can see, so on the shared database it would send other tests' mail and they would
steal its rows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import sqlalchemy as sa
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.ext.asyncio import AsyncEngine

from app.outbox.claim import RetryPolicy
from app.outbox.enqueue import enqueue_email
from app.outbox.worker import OutboxWorker
from app.platform.db import create_engine, upgrade_to_head
from app.settings import Settings
from tests.processes import free_port

PORTS = (18100, 18200)

# Retries in tenths of a second instead of minutes; the window is long unless a test shortens it.
FAST = RetryPolicy(
    lease=dt.timedelta(seconds=30),
    first_delay=dt.timedelta(seconds=0.1),
    max_delay=dt.timedelta(seconds=0.3),
)


@asynccontextmanager
async def private_database(server_url: str) -> AsyncIterator[str]:
    """A new database on the test server, migrated to head, dropped afterwards."""
    name = "anonid_outbox_" + secrets.token_hex(4)
    parts = urlsplit(server_url)
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    await asyncio.to_thread(upgrade_to_head, url)
    try:
        yield url
    finally:
        admin = await asyncpg.connect(server_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@asynccontextmanager
async def private_engine(server_url: str) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """``private_database`` and an engine on it, disposed afterwards."""
    async with private_database(server_url) as url:
        engine = create_engine(url, pool_size=2)
        try:
            yield url, engine
        finally:
            await engine.dispose()


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running_worker(
    engine: AsyncEngine, settings: Settings, **options: Any
) -> AsyncIterator[OutboxWorker]:
    """An ``OutboxWorker`` task, listening and settled; cancelled (cleanly) on exit."""
    options.setdefault("policy", FAST)
    worker = OutboxWorker(engine, settings, **options)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.listening.wait(), 20)
        await settle(worker)
        yield worker
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled(), "the worker ended by itself"


async def settle(worker: OutboxWorker) -> None:
    """Wait until the worker has nothing to do and no wake-up pending."""

    async def quiet() -> bool:
        return worker.idle.is_set() and not worker._wake.is_set()

    await until(quiet)


async def enqueue(engine: AsyncEngine, settings: Settings, *recipients: str) -> list[int]:
    """Commit one ``password_changed`` email per recipient in one transaction; the row ids."""
    async with engine.begin() as conn:
        return [
            await enqueue_email(
                conn,
                settings,
                kind="password_changed",
                to=to,
                user_id=None,
                context={"reset_request_url": "https://anonid.test/account/reset"},
            )
            for to in recipients
        ]


async def outbox_row(engine: AsyncEngine, row_id: int) -> Any:
    async with engine.connect() as conn:
        return (
            await conn.execute(sa.text("SELECT * FROM outbox WHERE id = :id"), {"id": row_id})
        ).one()


def address() -> str:
    return f"u{secrets.token_hex(6)}@example.com"


# A webhook receiver: real HTTP (uvicorn) on a port of this test's range.


class Receiver:
    """Records every POST (body bytes, headers); answers ``statuses`` in turn, then 204."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.port = free_port(*PORTS)
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.statuses = list(statuses or [])
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self.accepted: list[tuple[bytes, dict[str, str]]] = []
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.received.append((body, headers))
        status = self.statuses.pop(0) if self.statuses else 204
        if 200 <= status < 300:
            self.accepted.append((body, headers))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def start(self) -> None:
        config = uvicorn.Config(
            self, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            assert not self._task.done(), "the receiver could not start"
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = None


# TLS: a self-signed certificate for 127.0.0.1, trusted only by the contexts made here.


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def client_context(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))
