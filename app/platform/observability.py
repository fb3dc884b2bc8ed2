"""Per-request observation, as plain ASGI (no BaseHTTPMiddleware): request id, access log, metrics.

- The request id is the incoming ``X-Request-Id`` when it looks sane, else a fresh one; it is echoed
  in the response header and set in a contextvar so every log record of the request carries it.
- One access line per request: method, route template, status, duration, request id. The raw path
  and query string are never logged (hosted pages carry link tokens in ``?token=``).
- Metrics are labelled by the matched route template, never the raw path, so cardinality stays
  bounded; requests that match no route are labelled ``unmatched``.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.platform import metrics
from app.platform.logs import RecordMaker, request_id_var

access_log = logging.getLogger("anonid.access")
access_record = RecordMaker(access_log, logging.INFO, "%s %s %d %.1fms", __file__)

REQUEST_ID_HEADER = b"x-request-id"
_SANE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:+/=\-]{1,128}$")
UNMATCHED = "unmatched"


def incoming_request_id(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == REQUEST_ID_HEADER:
            if _SANE_REQUEST_ID.match(value):
                return str(value.decode("ascii"))
            break
    return secrets.token_hex(16)


def route_template(scope: Scope) -> str:
    """The path template of the route that handled the request (``None`` before routing)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def documented_templates(app: Any) -> list[tuple[re.Pattern[str], str]]:
    """Path patterns of every documented route, for requests refused before routing."""
    try:
        paths = app.openapi().get("paths", {})
    except Exception:  # no schema, no templates: such requests are labelled "unmatched"
        return []
    return [(compile_path(template)[0], template) for template in paths]


class RequestObserver:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._templates: list[tuple[re.Pattern[str], str]] | None = None
        # (method, route template, status) -> its two series; bounded like the labels themselves.
        # Looking a labelled child up costs more than counting, on every request.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def template(self, scope: Scope) -> str:
        routed = route_template(scope)
        if routed != UNMATCHED or "app" not in scope:
            return routed
        # Refused before routing (CSRF, media type, size): name the route it was meant for.
        if self._templates is None:
            self._templates = documented_templates(scope["app"])
        path = scope["path"]
        return next((t for pattern, t in self._templates if pattern.match(path)), UNMATCHED)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            self._observe(scope, status, started)
            # Left set on purpose: the 500 handler runs outside this middleware, in the same task,
            # and its traceback record must carry the request id too.
            raise
        self._observe(scope, status, started)
        request_id_var.reset(token)

    def _observe(self, scope: Scope, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        method = scope["method"]
        route = self.template(scope)
        series = self._series.get((method, route, status))
        if series is None:
            label = str(status)
            series = (
                metrics.REQUESTS.labels(method, route, label),
                metrics.REQUEST_SECONDS.labels(method, route, label),
            )
            self._series[(method, route, status)] = series
        series[0].inc()
        series[1].observe(elapsed)
        if not access_log.isEnabledFor(logging.INFO):
            return
        duration_ms = elapsed * 1000
        # Made and handled directly: Logger.info would first walk the stack to find the caller's
        # file and line, which no format shows, on every request.
        record = access_record.make(
            (method, route, status, duration_ms),
            {
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(duration_ms, 2),
            },
        )
        access_log.handle(record)
