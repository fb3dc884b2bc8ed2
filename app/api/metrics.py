"""``GET /metrics``: Prometheus text format.

The process's counters and histograms are in ``app.platform.metrics``. The gauges that describe
the database are defined here, read at scrape time, cached for ``DB_GAUGE_SECONDS`` so frequent
scrapes cost nothing, and never scan a table: accounts by state come from the counts the worker
refreshes (``app.lifecycle.counts``, at most 60 s old), outbox depth and failures from their
partial indexes.
"""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa
from fastapi import APIRouter, Request
from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import Response

from app.api.deps import services
from app.lifecycle.counts import MAX_LAG_SECONDS, REFRESH_SECONDS, read_counts
from app.platform import metrics
from app.platform.metrics import KINDS

log = logging.getLogger("anonid.metrics")

router = APIRouter()

DB_GAUGE_SECONDS = 10.0

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
STATES = ("anonymous", "pending", "registered")

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


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {metrics.CONTENT_TYPE: {}}, "description": "Prometheus text"}},
)
async def prometheus(request: Request) -> Response:
    svc = services(request)
    gauges = svc.extras.get("metrics_gauges")
    if gauges is None:
        gauges = svc.extras["metrics_gauges"] = DatabaseGauges(svc.engine)
    await gauges.refresh()
    return Response(
        metrics.exposition(),
        media_type=metrics.CONTENT_TYPE,
        headers={"Cache-Control": "no-store"},
    )
