"""Prometheus metrics, exposed at ``GET /metrics`` in the text format.

Counters and histograms live in this process. The gauges that describe the database are
defined and read by the ``/metrics`` route (``app.api.metrics``).

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
import os
import shutil
import tempfile
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

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
EMAILS_SENT = Counter("anonid_emails_sent", "Emails accepted by the SMTP server.")
WEBHOOKS_SENT = Counter("anonid_webhooks_sent", "Webhook deliveries acknowledged with a 2xx.")
DELIVERY_FAILURES = Counter(
    "anonid_outbox_delivery_failures", "Failed outbox delivery attempts, by kind.", ["kind"]
)
CULL_DELETED = Counter("anonid_cull_deleted", "Anonymous accounts deleted by the cull.")
RATE_LIMITED = Counter("anonid_rate_limited", "Requests refused with 429 rate_limited.")

KINDS = ("email", "webhook")

for _kind in KINDS:
    DELIVERY_FAILURES.labels(_kind)


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
