"""Observability: /metrics series, request ids in responses and logs, nothing secret in any log."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from app.lifecycle.counts import refresh_counts
from app.lifecycle.cull import run_cull
from app.platform.logs import (
    ConsoleFormatter,
    JsonFormatter,
    RecordMaker,
    configure_logging,
    request_id_var,
)
from tests.conftest import AppFactory, make_settings, running_app
from tests.lifecycle_support import (
    ADMIN_KEY,
    FAR_CUTOFF_DAYS,
    FAR_PAST_DAYS,
    admin_headers,
    insert_guests,
    new_guest,
)
from tests.processes import Served, clean_env, free_port

NAMED_SERIES = {
    "anonid_http_requests": "counter",
    "anonid_http_request_duration_seconds": "histogram",
    "anonid_accounts": "gauge",
    "anonid_outbox_pending": "gauge",
    "anonid_outbox_failed": "gauge",
    "anonid_emails_sent": "counter",
    "anonid_webhooks_sent": "counter",
    "anonid_outbox_delivery_failures": "counter",
    "anonid_cull_deleted": "counter",
    "anonid_rate_limited": "counter",
}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(text: str, name: str, **labels: str) -> float:
    return _samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_expose_the_named_series(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    families = {f.name: f.type for f in text_string_to_metric_families(r.text)}
    for name, kind in NAMED_SERIES.items():
        assert families.get(name) == kind, name
    assert "anonid_emails_sent_total" in r.text and "anonid_rate_limited_total" in r.text


async def test_requests_are_labelled_by_route_template_not_raw_path(
    app_with: AppFactory,
) -> None:
    _, client = await app_with(admin_api_key=ADMIN_KEY)
    raw_id = str(uuid.uuid4())
    await client.get(f"/v1/admin/users/{raw_id}", headers=admin_headers())
    await client.get(f"/no/such/{raw_id}")
    # Refused by the guard before routing: still labelled with the route it was meant for.
    await client.patch("/v1/me/data", content=b"x", headers={"Content-Type": "text/plain"})
    text = (await client.get("/metrics")).text

    assert raw_id not in text
    assert (
        _value(
            text,
            "anonid_http_requests_total",
            method="GET",
            route="/v1/admin/users/{user_id}",
            status="404",
        )
        >= 1
    )
    assert (
        _value(text, "anonid_http_requests_total", method="GET", route="unmatched", status="404")
        >= 1
    )
    assert (
        _value(
            text, "anonid_http_requests_total", method="PATCH", route="/v1/me/data", status="415"
        )
        >= 1
    )
    buckets = [
        k
        for k in _samples(text)
        if k[0] == "anonid_http_request_duration_seconds_bucket"
        and ("route", "/v1/admin/users/{user_id}") in k[1]
    ]
    assert buckets


async def test_account_and_outbox_gauges_match_the_database(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    _, client = await app_with()  # a fresh app: its first scrape reads the database
    await insert_guests(engine, 2)
    async with engine.begin() as conn:
        await refresh_counts(conn)  # as the worker does every 30 s
    text = (await client.get("/metrics")).text
    async with engine.connect() as conn:
        registered = await conn.scalar(sa.text("SELECT count(*) FROM users WHERE NOT is_anonymous"))
        anonymous = await conn.scalar(sa.text("SELECT count(*) FROM users WHERE is_anonymous"))
        pending_mail = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM outbox WHERE kind = 'email' "
                "AND sent_at IS NULL AND failed_at IS NULL"
            )
        )
    states = {
        s: _value(text, "anonid_accounts", state=s) for s in ("anonymous", "pending", "registered")
    }
    assert states["registered"] == registered
    assert states["anonymous"] + states["pending"] == anonymous
    assert _value(text, "anonid_outbox_pending", kind="email") == pending_mail


async def test_cull_deletions_are_counted(
    client: httpx.AsyncClient, engine: AsyncEngine, database_url: str
) -> None:
    before = _value((await client.get("/metrics")).text, "anonid_cull_deleted_total")
    await insert_guests(engine, 3, days_ago=FAR_PAST_DAYS)
    result = await run_cull(engine, make_settings(database_url), older_than_days=FAR_CUTOFF_DAYS)
    after = _value((await client.get("/metrics")).text, "anonid_cull_deleted_total")
    assert after - before == result["deleted"] >= 3


async def test_a_sane_request_id_is_echoed_and_others_are_replaced(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/healthz", headers={"X-Request-Id": "abc-123.DEF_456"})
    assert r.headers["x-request-id"] == "abc-123.DEF_456"
    generated = (await client.get("/healthz")).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    for insane in ("x" * 500, "has space", "new\\nline", "<script>"):
        r = await client.get("/healthz", headers={"X-Request-Id": insane})
        assert r.headers["x-request-id"] != insane
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    # Refusals made before any route runs carry one too.
    r = await client.post("/v1/anonymous", content=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.headers["x-request-id"]


async def test_access_log_carries_the_request_id_route_status_and_duration(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        r = await client.get("/healthz", headers={"X-Request-Id": "req-observe-1"})
    (line,) = [rec for rec in caplog.records if rec.name == "anonid.access"]
    assert r.headers["x-request-id"] == "req-observe-1"
    assert line.request_id == "req-observe-1"
    assert (line.method, line.route, line.status) == ("GET", "/healthz", 200)
    assert line.duration_ms >= 0
    as_json = orjson.loads(JsonFormatter().format(line))
    assert as_json["request_id"] == "req-observe-1" and as_json["route"] == "/healthz"
    assert "[req-observe-1]" in ConsoleFormatter().format(line)


async def test_log_records_made_inside_a_request_carry_its_id(
    app_with: AppFactory, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    _, client = await app_with(admin_api_key=ADMIN_KEY)
    await insert_guests(engine, 1, days_ago=FAR_PAST_DAYS)
    with caplog.at_level(logging.INFO):
        r = await client.post(
            "/v1/admin/cull",
            json={"older_than_days": FAR_CUTOFF_DAYS},
            headers={**admin_headers(), "X-Request-Id": "req-cull-7"},
        )
    assert r.status_code == 200
    cull_lines = [rec for rec in caplog.records if rec.name == "anonid.cull"]
    assert cull_lines and all(rec.request_id == "req-cull-7" for rec in cull_lines)


async def test_logs_never_contain_tokens_cookies_or_link_tokens(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    link_token = "linktoken-" + uuid.uuid4().hex
    with caplog.at_level(logging.DEBUG):
        _, token = await new_guest(client)
        await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
        r = await client.post("/v1/anonymous")
        cookie = r.cookies["anonid_session"]
        await client.get("/v1/me")
        await client.get(f"/account/setup?token={link_token}")
        await client.get(f"/v1/me?token={link_token}", headers={"Authorization": "Bearer junk"})
        await client.patch("/v1/me/data", json={"secret": link_token})
    client.cookies.clear()

    access = [rec for rec in caplog.records if rec.name == "anonid.access"]
    assert len(access) >= 7
    # The test's own HTTP client logs its URLs; the service silences that logger (tested below).
    service_records = [
        rec for rec in caplog.records if not rec.name.startswith(("httpx", "httpcore"))
    ]
    formatted = "\n".join(
        f"{ConsoleFormatter().format(rec)}\n{JsonFormatter().format(rec)}"
        for rec in service_records
    )
    for secret in (token, cookie, link_token):
        assert secret not in formatted


def test_configure_logging_silences_loggers_that_print_raw_urls() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("json")
        assert logging.getLogger("uvicorn.access").getEffectiveLevel() > logging.INFO
        assert logging.getLogger("httpx").getEffectiveLevel() > logging.INFO
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        configure_logging("console")
        assert isinstance(root.handlers[0].formatter, ConsoleFormatter)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def test_metrics_add_up_across_serve_workers(tmp_path: Path, database_url: str) -> None:
    env = clean_env(
        ANONID_DATABASE_URL=database_url,
        ANONID_RUN_WORKER="false",
        ANONID_CULL_INTERVAL_MINUTES="0",
        ANONID_LOG_FORMAT="json",
    )
    served = Served(tmp_path, env, free_port(18300, 18399), "--workers", "2")
    try:
        served.wait_ready()
        for _ in range(30):  # a new connection each time, so both workers answer some
            assert httpx.get(served.base + "/healthz", timeout=10).status_code == 200
        text = httpx.get(served.base + "/metrics", timeout=10).text
    finally:
        assert served.stop() == 0
    total = _value(text, "anonid_http_requests_total", method="GET", route="/healthz", status="200")
    assert total == 30
    assert "anonid_emails_sent_total" in text and "anonid_accounts" in text
    log = served.log.read_text()
    assert '"logger":"anonid.access"' in log and '"request_id"' in log


async def test_browsers_may_send_and_read_the_request_id(client: httpx.AsyncClient) -> None:
    origin = "https://anonid.test"
    preflight = await client.options(
        "/v1/me",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-request-id",
        },
    )
    assert preflight.status_code == 200
    assert "x-request-id" in preflight.headers["access-control-allow-headers"].lower()
    r = await client.get("/healthz", headers={"Origin": origin})
    assert "x-request-id" in r.headers["access-control-expose-headers"].lower()


async def test_an_unhandled_error_is_logged_with_the_request_id(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_app(make_settings(database_url)) as app:

        async def boom() -> None:
            raise RuntimeError("kaboom")

        app.add_api_route("/boom", boom)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="https://anonid.test") as c:
            with caplog.at_level(logging.INFO):
                r = await c.get("/boom", headers={"X-Request-Id": "req-boom-1"})
    assert r.status_code == 500 and r.json()["error"] == "internal_error"
    errors = [rec for rec in caplog.records if rec.exc_info and rec.levelno >= logging.ERROR]
    assert errors and all(rec.request_id == "req-boom-1" for rec in errors)
    (access,) = [rec for rec in caplog.records if rec.name == "anonid.access"]
    assert access.status == 500 and access.route == "/boom"


def test_fastapi_opentelemetry_is_on_only_where_opentelemetry_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.main import _fastapi_telemetry

    for name in [k for k in os.environ if k.startswith("OTEL_")] + ["FASTAPI_OTEL_AUTO_CONFIGURE"]:
        monkeypatch.delenv(name, raising=False)
    assert _fastapi_telemetry() == {"tracing": False, "metrics": False, "logs": False}
    monkeypatch.setenv("OTEL_SERVICE_NAME", "anonid")
    assert _fastapi_telemetry() is None  # FastAPI's defaults: instrument what is configured


def _access_record_with(maker: RecordMaker, request_id: str) -> logging.LogRecord:
    token = request_id_var.set(request_id)
    try:
        return maker.make(("POST", "/v1/anonymous", 201, 1.25), {"route": "/v1/anonymous"})
    finally:
        request_id_var.reset(token)


def test_access_records_are_whole_log_records_made_by_any_installed_factory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logger = logging.getLogger("anonid.access")
    maker = RecordMaker(logger, logging.INFO, "%s %s %d %.1fms", __file__)
    for flag in ("logThreads", "logProcesses", "logMultiprocessing", "logAsyncioTasks"):
        if hasattr(logging, flag):
            monkeypatch.setattr(logging, flag, False)
    made = logger.makeRecord(
        logger.name, logging.INFO, __file__, 0, "%s", ("x",), None, extra={"route": "/"}
    )
    before = time.time()
    first = _access_record_with(maker, "req-a")
    second = _access_record_with(maker, "req-b")  # copied from the first one's template
    for record in (first, second):
        assert type(record) is logging.LogRecord and set(vars(record)) == set(vars(made))
        assert record.created >= before and record.relativeCreated > 0
        assert record.getMessage() == "POST /v1/anonymous 201 1.2ms"
        assert record.route == "/v1/anonymous" and record.module == "test_observability"
    assert (first.request_id, second.request_id) == ("req-a", "req-b")

    # Another factory (an operator's, OpenTelemetry's) makes every record, and sees our fields.
    ours = logging.getLogRecordFactory()

    def theirs(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = ours(*args, **kwargs)
        record.trace_id = "t-1"
        return record

    monkeypatch.setattr(logging, "_logRecordFactory", theirs)
    third = _access_record_with(maker, "req-c")
    assert third.trace_id == "t-1" and third.request_id == "req-c"
    # So do the thread and process fields, when recorded.
    monkeypatch.setattr(logging, "_logRecordFactory", ours)
    monkeypatch.setattr(logging, "logThreads", True)
    assert _access_record_with(maker, "req-d").thread == threading.get_ident()


def test_formatters_print_what_the_standard_formatting_would() -> None:
    standard_console = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s%(rid)s: %(message)s")
    console, json_formatter = ConsoleFormatter(), JsonFormatter()
    for created in (1764025395.0, 1764025395.0000004, 1764025395.9999996, 1764025396.123456):
        for request_id in ("req-1", None):
            record = logging.LogRecord("anonid.x", logging.WARNING, __file__, 1, "a %s", (1,), None)
            record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
            record.request_id = request_id
            record.rid = f" [{request_id}]" if request_id else ""
            expected = standard_console.format(record)
            del record.rid
            assert console.format(record) == expected
            try:
                raise ValueError("boom")
            except ValueError:
                failed = logging.LogRecord(
                    "anonid.x", logging.ERROR, __file__, 1, "a %s", (1,), sys.exc_info()
                )
            failed.created, failed.msecs, failed.request_id = record.created, record.msecs, None
            failed.rid = ""
            expected = standard_console.format(failed)
            del failed.rid
            failed.exc_text = None  # the standard formatter cached the traceback
            assert console.format(failed) == expected and "ValueError: boom" in expected
            entry = orjson.loads(json_formatter.format(record))
            assert entry["time"] == datetime.fromtimestamp(created, UTC).isoformat()
            assert entry.get("request_id") == request_id and entry["message"] == "a 1"
