"""Prometheus metrics, exposed at ``GET /metrics`` in the text format.

Counters and histograms live in this process. Gauges that describe the database are read at
scrape time, cached for ``DB_GAUGE_SECONDS`` so frequent scrapes cost nothing, and never scan a
table: accounts by state come from the counts the worker refreshes (``app.lifecycle.counts``, at
most 60 s old), outbox depth and failures from their partial indexes.

Processes: a single process keeps its series in memory. ``serve --workers N`` points every worker
at one fresh ``PROMETHEUS_MULTIPROC_DIR`` (removed at exit; an operator may set their own), and
``/metrics`` then aggregates all workers with prometheus-client's multiprocess collector: counters
and histograms add up, the database gauges report the most recent value. Without that variable,
several independent processes (e.g. ``serve`` and ``worker``) each expose their own series.

Other modules increment: ``EMAILS_SENT`` (``anonid_emails_sent_total``, per email delivered),
``WEBHOOKS_SENT`` (``anonid_webhooks_sent_total``), ``DELIVERY_FAILURES``
(``anonid_outbox_delivery_failures_total{kind="email|webhook"}``, per failed attempt),
``RATE_LIMITED`` (``anonid_rate_limited_total``, per refused request), ``CULL_DELETED``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess
from sqlalchemy.ext.asyncio import AsyncEngine

from app.lifecycle.counts import MAX_LAG_SECONDS, REFRESH_SECONDS, read_counts

log = logging.getLogger("anonid.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
DB_GAUGE_SECONDS = 10.0

REQUESTS = Counter(
    "anonid_http_requests",
    "HTTP requests by method, route template and status.",
    ["method", "route", "status"],
)
REQUEST_SECONDS = Histogram(
    "anonid_http_request_duration_seconds",
    "HTTP request latency by method, route template and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ACCOUNTS = Gauge(
    "anonid_accounts",
    "Accounts by state (anonymous, pending, registered), recounted by the worker every"
    f" {REFRESH_SECONDS:.0f} s: at most {MAX_LAG_SECONDS} s old.",
    ["state"],
    multiprocess_mode="mostrecent",
)
OUTBOX_PENDING = Gauge(
    "anonid_outbox_pending",
    "Outbox rows not yet delivered and not given up on, by kind.",
    ["kind"],
    multiprocess_mode="mostrecent",
)
OUTBOX_FAILED = Gauge(
    "anonid_outbox_failed",
    "Outbox rows given up on after every retry, by kind.",
    ["kind"],
    multiprocess_mode="mostrecent",
)
EMAILS_SENT = Counter("anonid_emails_sent", "Emails accepted by the SMTP server.")
WEBHOOKS_SENT = Counter("anonid_webhooks_sent", "Webhook deliveries acknowledged with a 2xx.")
DELIVERY_FAILURES = Counter(
    "anonid_outbox_delivery_failures", "Failed outbox delivery attempts, by kind.", ["kind"]
)
CULL_DELETED = Counter("anonid_cull_deleted", "Anonymous accounts deleted by the cull.")
RATE_LIMITED = Counter("anonid_rate_limited", "Requests refused with 429 rate_limited.")

STATES = ("anonymous", "pending", "registered")
KINDS = ("email", "webhook")

# Served by the partial indexes ix_outbox_due and ix_outbox_failed_at: the rows counted, never
# the delivered ones the table mostly holds.
_OUTBOX_GAUGES = sa.text(
    """
SELECT p.*, f.* FROM (
    SELECT count(*) FILTER (WHERE kind = 'email') AS email_pending,
           count(*) FILTER (WHERE kind = 'webhook') AS webhook_pending
    FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL
) AS p, (
    SELECT count(*) FILTER (WHERE kind = 'email') AS email_failed,
           count(*) FILTER (WHERE kind = 'webhook') AS webhook_failed
    FROM outbox WHERE failed_at IS NOT NULL
) AS f
"""
)

# Pre-create every labelled child so a scrape shows zeros rather than missing series.
for _state in STATES:
    ACCOUNTS.labels(_state)
for _kind in KINDS:
    OUTBOX_PENDING.labels(_kind)
    OUTBOX_FAILED.labels(_kind)
    DELIVERY_FAILURES.labels(_kind)


class DatabaseGauges:
    """Refreshes the database gauges at most every ``DB_GAUGE_SECONDS``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.refreshed_at = float("-inf")

    async def refresh(self) -> None:
        if time.monotonic() - self.refreshed_at < DB_GAUGE_SECONDS:
            return
        try:
            async with self.engine.connect() as conn:
                accounts = await read_counts(conn)
                row = (await conn.execute(_OUTBOX_GAUGES)).one()
        except Exception as exc:  # a scrape must not fail because the database does
            log.warning("metrics: database gauges not refreshed: %s", type(exc).__name__)
            return
        for state in STATES:
            ACCOUNTS.labels(state).set(accounts[state])
        for kind in KINDS:
            OUTBOX_PENDING.labels(kind).set(getattr(row, f"{kind}_pending"))
            OUTBOX_FAILED.labels(kind).set(getattr(row, f"{kind}_failed"))
        self.refreshed_at = time.monotonic()


def exposition() -> bytes:
    """Every series in the text format (aggregated over workers in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


@contextlib.contextmanager
def multiprocess_directory() -> Iterator[None]:
    """Set up prometheus-client's multiprocess mode for child processes started inside the block.

    Must run before the children import prometheus-client; an operator-set directory is kept.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    directory = tempfile.mkdtemp(prefix="anonid-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        yield
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(directory, ignore_errors=True)
