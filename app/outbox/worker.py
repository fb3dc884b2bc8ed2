"""The outbox worker: delivers emails and webhooks, runs the scheduled cull and housekeeping
(retention, the daily stats rollup and the account counts: ``housekeeping.py``).

Guarantees:
- wakes on ``NOTIFY anonid_outbox`` (sent by a trigger when a row commits) through its own asyncpg
  connection to ``listen_url`` (a direct one: a transaction pooler cannot keep a ``LISTEN``), and on
  a timer (the next due time or lease end read from the outbox at start, after each failed
  attempt and at least every ``poll_interval``), so a missed notification only delays delivery;
- with no ``listen_url`` (only a pooler is configured) it polls every ``POLL_WITHOUT_LISTEN``
  seconds, so a queued email still leaves within 2 seconds;
- runs up to ``concurrency`` deliveries at once and refills a freed slot at once: a row is claimed
  as soon as it is due and a slot is free, never held behind a slower delivery; it claims only as
  many rows as it has free slots, so no claimed row waits in this process while another worker
  could send it;
- delivers until nothing is due; any number of workers share one outbox (see ``claim.py``);
- never dies of a database, SMTP or receiver outage: each failure is logged and retried later;
- an acknowledged delivery is recorded even if the database is briefly away (kept in memory and
  written on the next round), so it is not sent again while this process lives;
- cancellation stops it cleanly: unfinished claims are handed back for another worker at once.

``OutboxWorker(engine, settings, smtp_url=…).run()`` is a plain coroutine: ``serve`` runs it as a
task, ``anonid worker`` runs it alone, tests run it against their own engine. SMTP connections are
reused as ``mail.SmtpSender`` describes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.outbox.claim import (
    Claimed,
    RetryPolicy,
    claim_due,
    mark_sent,
    release,
    schedule_retry,
    seconds_until_due,
)
from app.outbox.housekeeping import housekeeping_loop
from app.outbox.mail import SmtpSender, SmtpTarget
from app.outbox.webhooks import send_webhook, webhook_client
from app.platform import metrics
from app.platform.db import driver_dsn, single_statement
from app.settings import Settings

log = logging.getLogger("anonid.worker")

CHANNEL = "anonid_outbox"
MAX_BACKOFF = 30.0
KEEPALIVE_SECONDS = 30.0
# Without LISTEN, the delay between a commit and its delivery is at most this (plus the claim).
POLL_WITHOUT_LISTEN = 1.0
# listen_url's default: LISTEN through the engine's own URL (a direct connection).
ENGINE_URL = "engine"


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
        listen_url: str | None = ENGINE_URL,
        lock_engine: AsyncEngine | None = None,
    ) -> None:
        self.engine = engine
        # Where LISTEN connects (None: nowhere, poll instead); the cull's lock (None: the engine).
        self.listen_url = self._dsn() if listen_url == ENGINE_URL else listen_url
        self.lock_engine = lock_engine
        self.settings = settings
        self.smtp = SmtpTarget.parse(smtp_url) if smtp_url else None
        self.ssl_context = ssl_context
        self._mailer = (
            SmtpSender(self.smtp, ssl_context=ssl_context, keep=concurrency) if self.smtp else None
        )
        self.policy = policy or RetryPolicy()
        self.poll_interval = (
            poll_interval if self.listen_url else min(poll_interval, POLL_WITHOUT_LISTEN)
        )
        self.batch_size = batch_size
        self.cull_enabled = cull and settings.cull_interval_minutes > 0
        secret = settings.webhook_secret
        self.webhook_secret = secret.get_secret_value() if secret else None
        # Rows of a kind this process cannot deliver stay queued for one that can.
        self.kinds = [k for k, ok in (("email", self.smtp), ("webhook", secret)) if ok]
        self.listening = asyncio.Event()  # set while LISTEN is active (tests wait for it)
        self.idle = asyncio.Event()  # set while nothing is due and the loop waits for a wake-up
        self.concurrency = concurrency
        self._wake = asyncio.Event()  # rows may have been queued: claim when a slot is free
        self._changed = asyncio.Event()  # the delivery loop has something to look at
        self._tasks: set[asyncio.Task[None]] = set()  # deliveries in flight
        self._more = True  # the last claim was full: more rows may be due
        self._recheck = True  # the timer must be read from the outbox again
        self._deadline = 0.0  # loop time at which the timer claims
        self._inflight: dict[int, Claimed] = {}
        self._sent_unrecorded: dict[int, Claimed] = {}  # acknowledged, not yet marked sent
        self._recorder: asyncio.Task[None] | None = None
        self._record_lock = asyncio.Lock()
        self._http = webhook_client()

    async def run(self) -> None:
        """Deliver (and cull) until cancelled."""
        where = self.smtp.describe() if self.smtp else "nowhere (no SMTP URL)"
        log.info("outbox worker started: emails to %s, kinds %s", where, ",".join(self.kinds))
        try:
            async with asyncio.TaskGroup() as group:
                if self.listen_url:
                    group.create_task(self._listen_loop(), name="anonid-outbox-listen")
                else:
                    log.info(
                        "no direct database URL: polling the outbox every %ss", self.poll_interval
                    )
                group.create_task(self._deliver_loop(), name="anonid-outbox-deliver")
                if self.cull_enabled:
                    group.create_task(self._cull_loop(), name="anonid-cull")
                # Retention, the daily rollup and the account counts (housekeeping.py).
                group.create_task(
                    housekeeping_loop(self.engine, self.settings), name="anonid-housekeeping"
                )
        finally:
            await self._stop()

    def wake(self) -> None:
        self._wake.set()
        self._changed.set()

    # Delivery.

    def _autocommit(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A pooled connection on which each statement is its own transaction (one round trip)."""
        return single_statement(self.engine)

    def _start(self, row: Claimed) -> None:
        self._inflight[row.id] = row
        task = asyncio.create_task(self._deliver(row), name=f"anonid-outbox-{row.id}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        full = len(self._tasks) >= self.concurrency
        self._tasks.discard(task)
        # The loop is told when it has a use for the free slot (it was waiting for one, or more
        # rows may be due), for the outcome (a retry to time) or for the news that it is idle.
        if full or self._more or self._recheck or not self._tasks:
            self._changed.set()

    async def _claim_into_free_slots(self) -> bool:
        """Claim due rows for the free slots and start them; True to claim again at once."""
        if self._sent_unrecorded and (self._recorder is None or self._recorder.done()):
            await self._record_unrecorded()  # left over from a database blip; raises if it lasts
        if not self.kinds:  # nothing this process could deliver
            self._wake.clear()
            self._more = False
            return False
        free = min(self.concurrency - len(self._tasks), self.batch_size)
        timer = asyncio.get_running_loop().time() >= self._deadline
        if free <= 0 or not (self._more or timer or self._wake.is_set()):
            return False
        self._wake.clear()
        async with self._autocommit() as conn:
            rows = await claim_due(conn, self.policy, self.kinds, free)
        # A full claim may have left due rows behind; a short one took every row due now.
        self._more = len(rows) == free
        if timer:
            self._recheck = True
        for row in rows:
            self._start(row)
        return self._more and len(self._tasks) < self.concurrency

    async def _deliver(self, row: Claimed) -> None:
        try:
            if row.kind == "email":
                assert self._mailer is not None
                await self._mailer.send(row.payload)
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
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_sent(), name="anonid-outbox-sent")

    async def _record_sent(self) -> None:
        """Record acknowledged deliveries: those that finish together share one statement."""
        try:
            await self._record_unrecorded()
        except Exception as exc:
            # Kept in _sent_unrecorded: the delivery loop records them on a later round.
            log.warning(
                "could not record %s delivered outbox row(s) yet: %s",
                len(self._sent_unrecorded),
                _describe(exc),
            )
            self._changed.set()

    async def _failed(self, row: Claimed, error: str) -> None:
        try:
            await self._record_failure(row, error)
        finally:
            # The retry's due time (or the lease's end) is for the timer to find.
            self._recheck = True

    async def _record_failure(self, row: Claimed, error: str) -> None:
        metrics.DELIVERY_FAILURES.labels(kind=row.kind).inc()
        # If this cannot be recorded, the lease runs out and the row is simply due again.
        self._inflight.pop(row.id, None)
        try:
            async with self._autocommit() as conn:
                gave_up = await schedule_retry(conn, row, self.policy, error)
        except Exception as exc:
            log.warning(
                "%s delivery failed (outbox %s, attempt %s): %s; the failure could not be"
                " recorded (%s), the row is due again when its lease ends",
                row.kind,
                row.id,
                row.attempts,
                error,
                _describe(exc),
            )
            return
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
        async with self._record_lock:
            if not self._sent_unrecorded:
                return
            async with self._autocommit() as conn:
                while self._sent_unrecorded:
                    rows = list(self._sent_unrecorded.values())
                    await mark_sent(conn, rows)
                    for row in rows:
                        self._sent_unrecorded.pop(row.id, None)

    async def _next_wait(self) -> float:
        async with self._autocommit() as conn:
            due = await seconds_until_due(conn, self.kinds) if self.kinds else None
        if due is None:
            return self.poll_interval
        return min(max(due, 0.1), self.poll_interval)

    async def _deliver_loop(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        try:
            while True:
                self._changed.clear()
                try:
                    if await self._claim_into_free_slots():
                        continue
                    if self._recheck and not self._more:
                        self._recheck = False
                        self._deadline = loop.time() + await self._next_wait()
                    failures = 0
                    # With every slot busy, only a finished delivery can make room: no timer.
                    full = len(self._tasks) >= self.concurrency
                    until, event = (None if full else self._deadline), self._changed
                except Exception as exc:
                    failures += 1
                    wait = _backoff(failures)
                    log.warning("outbox delivery paused %.1fs: %s", wait, _describe(exc))
                    self._more = self._recheck = True
                    # Only a wake-up (not a finished delivery) cuts the pause short.
                    until, event = loop.time() + wait, self._wake
                if not self._tasks and not self._more:
                    self.idle.set()
                    if self._mailer is not None:
                        self._mailer.close_idle(older_than=SmtpSender.REUSE_SECONDS)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(until):
                        await event.wait()
                self.idle.clear()
        finally:
            # Cancelled: unfinished deliveries stop; _stop hands their claims back.
            pending = [*self._tasks, *([self._recorder] if self._recorder else [])]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # Wake-ups.

    def _dsn(self) -> str:
        return driver_dsn(self.engine.url.render_as_string(hide_password=False))

    def _on_notify(self, *args: Any) -> None:
        self.wake()

    async def _listen_loop(self) -> None:
        failures = 0
        while True:
            conn: asyncpg.Connection | None = None
            try:
                assert self.listen_url is not None
                conn = await asyncpg.connect(driver_dsn(self.listen_url), timeout=5)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                self.listening.set()
                failures = 0
                # Rows committed while nobody listened were never announced.
                self.wake()
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
                result = await run_cull(self.engine, self.settings, lock_engine=self.lock_engine)
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
                    async with self._autocommit() as conn:
                        await release(conn, list(self._inflight.values()))
                    self._inflight.clear()
        except Exception as exc:
            # The leases expire by themselves; this only makes the hand-over immediate.
            log.warning("could not hand back outbox claims on stop: %s", _describe(exc))
        await self._http.aclose()
        if self._mailer is not None:
            self._mailer.close_idle()
        log.info("outbox worker stopped")


async def run_worker(engine: AsyncEngine, settings: Settings, **options: Any) -> None:
    """Run one ``OutboxWorker`` until cancelled (see its keyword options)."""
    await OutboxWorker(engine, settings, **options).run()
