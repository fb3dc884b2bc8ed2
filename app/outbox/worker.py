"""The outbox worker: delivers emails and webhooks, and runs the scheduled cull.

Guarantees:
- wakes on ``NOTIFY anonid_outbox`` (sent by a trigger when a row commits) through its own asyncpg
  connection, and on a timer (the next retry's due time, at most ``poll_interval``), so a missed
  notification only delays delivery;
- delivers until nothing is due; any number of workers share one outbox (see ``claim.py``);
- never dies of a database, SMTP or receiver outage: each failure is logged and retried later;
- an acknowledged delivery is recorded even if the database is briefly away (kept in memory and
  written on the next round), so it is not sent again while this process lives;
- cancellation stops it cleanly: unfinished claims are handed back for another worker at once.

``OutboxWorker(engine, settings, smtp_url=…).run()`` is a plain coroutine: ``serve`` runs it as a
task, ``anonid worker`` runs it alone, tests run it against their own engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncEngine

from app import metrics
from app.outbox.claim import (
    Claimed,
    RetryPolicy,
    claim_due,
    mark_sent,
    release,
    schedule_retry,
    seconds_until_due,
)
from app.outbox.mail import SmtpTarget, send_email
from app.outbox.webhooks import send_webhook, webhook_client
from app.settings import Settings

log = logging.getLogger("anonid.worker")

CHANNEL = "anonid_outbox"
MAX_BACKOFF = 30.0
KEEPALIVE_SECONDS = 30.0


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


def _backoff(failures: int) -> float:
    return float(min(MAX_BACKOFF, 0.5 * 2 ** min(failures, 10)))


class OutboxWorker:
    """One delivery loop (plus the LISTEN connection and the cull schedule) for one process."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        *,
        smtp_url: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        policy: RetryPolicy | None = None,
        poll_interval: float = 30.0,
        batch_size: int = 20,
        concurrency: int = 10,
        cull: bool = True,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.smtp = SmtpTarget.parse(smtp_url) if smtp_url else None
        self.ssl_context = ssl_context
        self.policy = policy or RetryPolicy()
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.cull_enabled = cull and settings.cull_interval_minutes > 0
        secret = settings.webhook_secret
        self.webhook_secret = secret.get_secret_value() if secret else None
        # Rows of a kind this process cannot deliver stay queued for one that can.
        self.kinds = [k for k, ok in (("email", self.smtp), ("webhook", secret)) if ok]
        self.listening = asyncio.Event()  # set while LISTEN is active (tests wait for it)
        self.idle = asyncio.Event()  # set while nothing is due and the loop waits for a wake-up
        self._wake = asyncio.Event()
        self._sem = asyncio.Semaphore(concurrency)
        self._inflight: dict[int, Claimed] = {}
        self._sent_unrecorded: dict[int, Claimed] = {}
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._http = webhook_client()

    async def run(self) -> None:
        """Deliver (and cull) until cancelled."""
        where = self.smtp.describe() if self.smtp else "nowhere (no SMTP URL)"
        log.info("outbox worker started: emails to %s, kinds %s", where, ",".join(self.kinds))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._listen_loop(), name="anonid-outbox-listen")
                group.create_task(self._deliver_loop(), name="anonid-outbox-deliver")
                if self.cull_enabled:
                    group.create_task(self._cull_loop(), name="anonid-cull")
        finally:
            await self._stop()

    def wake(self) -> None:
        self._wake.set()

    # Delivery.

    async def deliver_due(self) -> int:
        """Claim and deliver until nothing is due; the number of attempts made."""
        await self._record_unrecorded()
        attempts = 0
        while self.kinds:
            async with self._autocommit.connect() as conn:
                rows = await claim_due(conn, self.policy, self.kinds, self.batch_size)
            if not rows:
                break
            self._inflight.update((row.id, row) for row in rows)
            # Every delivery of the batch finishes before any error (a database outage) surfaces.
            outcomes = await asyncio.gather(
                *(self._deliver(row) for row in rows), return_exceptions=True
            )
            attempts += len(rows)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        return attempts

    async def _deliver(self, row: Claimed) -> None:
        async with self._sem:
            try:
                if row.kind == "email":
                    assert self.smtp is not None
                    await send_email(self.smtp, row.payload, ssl_context=self.ssl_context)
                else:
                    assert self.webhook_secret is not None
                    await send_webhook(self._http, self.webhook_secret, row.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._failed(row, _describe(exc))
                return
        self._inflight.pop(row.id, None)
        self._sent_unrecorded[row.id] = row
        (metrics.EMAILS_SENT if row.kind == "email" else metrics.WEBHOOKS_SENT).inc()
        log.info("delivered %s (outbox %s, attempt %s)", row.kind, row.id, row.attempts)
        async with self._autocommit.connect() as conn:
            await mark_sent(conn, row)
        self._sent_unrecorded.pop(row.id, None)

    async def _failed(self, row: Claimed, error: str) -> None:
        metrics.DELIVERY_FAILURES.labels(kind=row.kind).inc()
        # If this cannot be recorded, the lease runs out and the row is simply due again.
        self._inflight.pop(row.id, None)
        async with self._autocommit.connect() as conn:
            gave_up = await schedule_retry(conn, row, self.policy, error)
        if gave_up:
            log.error(
                "gave up on %s (outbox %s) after %s attempts: %s",
                row.kind,
                row.id,
                row.attempts,
                error,
            )
        else:
            log.warning(
                "%s delivery failed (outbox %s, attempt %s): %s",
                row.kind,
                row.id,
                row.attempts,
                error,
            )

    async def _record_unrecorded(self) -> None:
        if not self._sent_unrecorded:
            return
        async with self._autocommit.connect() as conn:
            for row in list(self._sent_unrecorded.values()):
                await mark_sent(conn, row)
                self._sent_unrecorded.pop(row.id, None)

    async def _next_wait(self) -> float:
        async with self._autocommit.connect() as conn:
            due = await seconds_until_due(conn, self.kinds) if self.kinds else None
        if due is None:
            return self.poll_interval
        return min(max(due, 0.1), self.poll_interval)

    async def _deliver_loop(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            try:
                await self.deliver_due()
                wait = await self._next_wait()
                failures = 0
            except Exception as exc:
                failures += 1
                wait = _backoff(failures)
                log.warning("outbox delivery paused %.1fs: %s", wait, _describe(exc))
            self.idle.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            self.idle.clear()

    # Wake-ups.

    def _dsn(self) -> str:
        url = self.engine.url.set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def _on_notify(self, *args: Any) -> None:
        self._wake.set()

    async def _listen_loop(self) -> None:
        failures = 0
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn(), timeout=5)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                self.listening.set()
                failures = 0
                # Rows committed while nobody listened were never announced.
                self._wake.set()
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), timeout=KEEPALIVE_SECONDS)
                    except TimeoutError:
                        # A dead TCP peer is noticed only when we talk to it.
                        await conn.execute("SELECT 1", timeout=5)
                raise ConnectionError("the LISTEN connection was closed")
            except Exception as exc:
                failures += 1
                log.warning("outbox LISTEN connection lost, using the timer: %s", _describe(exc))
            finally:
                self.listening.clear()
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(_backoff(failures))

    # The scheduled cull.

    async def _cull_loop(self) -> None:
        from app.lifecycle.cull import run_cull

        interval = self.settings.cull_interval_minutes * 60
        while True:
            try:
                result = await run_cull(self.engine, self.settings)
                if result["deleted"]:
                    log.info("scheduled cull deleted %s accounts", result["deleted"])
            except Exception as exc:
                log.warning(
                    "scheduled cull failed, next in %s min: %s", interval // 60, _describe(exc)
                )
            await asyncio.sleep(interval)

    # Stopping.

    async def _stop(self) -> None:
        try:
            async with asyncio.timeout(5):
                await self._record_unrecorded()
                if self._inflight:
                    async with self._autocommit.connect() as conn:
                        await release(conn, list(self._inflight.values()))
                    self._inflight.clear()
        except Exception as exc:
            # The leases expire by themselves; this only makes the hand-over immediate.
            log.warning("could not hand back outbox claims on stop: %s", _describe(exc))
        await self._http.aclose()
        log.info("outbox worker stopped")


async def run_worker(engine: AsyncEngine, settings: Settings, **options: Any) -> None:
    """Run one ``OutboxWorker`` until cancelled (see its keyword options)."""
    await OutboxWorker(engine, settings, **options).run()
