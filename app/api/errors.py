"""Turning errors into responses: the one place that maps codes to HTTP, and documents them."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import orjson
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.errors import ERRORS, AnonidError
from app.sessions.cookies import CookieJar

log = logging.getLogger("anonid.api")

RETRY_AFTER_SECONDS = "2"


class ErrorBody(BaseModel):
    error: str
    message: str


def error_bytes(code: str, message: str | None = None) -> bytes:
    return orjson.dumps({"error": code, "message": message or ERRORS[code][1]})


def error_response(
    code: str,
    message: str | None = None,
    headers: dict[str, str] | None = None,
    clear_cookies: list[str] | None = None,
) -> Response:
    response = Response(
        error_bytes(code, message),
        status_code=ERRORS[code][0],
        media_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )
    for cookie in clear_cookies or ():
        response.headers.append("set-cookie", cookie)
    return response


def responses(*codes: str, expiring: bool = True) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the given error codes, grouped by status. Where an access token
    is accepted (``invalid_session`` listed), an expired one answers ``session_expired`` too,
    unless ``expiring`` is false (the refresh, which takes no access token)."""
    if expiring and "invalid_session" in codes and "session_expired" not in codes:
        codes = (*codes, "session_expired")
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(ERRORS[code][0], []).append(code)
    return {
        status: {
            "description": "Error: " + ", ".join(f"`{c}`" for c in group),
            # Spelled out as JSON: routes answering HTML (hosted pages) still send errors as JSON,
            # and each status lists exactly the codes it can carry.
            "content": {"application/json": {"schema": _error_schema(group)}},
        }
        for status, group in sorted(by_status.items())
    }


def _error_schema(codes: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "title": "Error",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "enum": codes},
            "message": {"type": "string"},
        },
    }


# Connection exceptions (08…) and a server shutting down, starting up or restarting (57P01-57P03):
# asyncpg raises "the database system is shutting down" from connect() unwrapped by SQLAlchemy.
# 08: connection exception; 53300: too many connections; 57P01-03: shutdown, crash, starting;
# 57014: a statement cancelled, by its statement_timeout (app.platform.pgpool) or by an operator.
OUTAGE_SQLSTATES = ("08", "53300", "57P01", "57P02", "57P03", "57014")


def _sqlstate(exc: object) -> str:
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return code if isinstance(code, str) else ""


def is_database_outage(exc: BaseException) -> bool:
    """Connection-level failures (server down, restarting, unreachable) and statements that did
    not finish in time, not bad statements."""
    if any(_sqlstate(e).startswith(OUTAGE_SQLSTATES) for e in (exc, getattr(exc, "orig", None))):
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return isinstance(exc, sqlalchemy.exc.InterfaceError | sqlalchemy.exc.OperationalError)
    if isinstance(exc, sqlalchemy.exc.TimeoutError | sqlalchemy.exc.DisconnectionError):
        return True
    # asyncpg's own (the hot pool, unwrapped): "connection is closed" and the like, which
    # SQLAlchemy reports as its InterfaceError above, and a pooled connection the server closed
    # while it sat idle ("cannot switch to state …; another operation is in progress": the
    # server's goodbye arrived before the connection noticed it was closed). The statement was
    # not sent, and app.platform.pgpool closes that connection.
    connection_level = (OSError, TimeoutError, ConnectionError, asyncpg.InterfaceError)
    return isinstance(exc, (*connection_level, asyncpg.exceptions.InternalClientError))


def _is_data_exception(exc: BaseException) -> bool:
    """SQLSTATE class 22 (data exception), which asyncpg's dialect may raise as a bare DBAPIError:
    a value such as a NUL character in text that PostgreSQL refuses to store."""
    return any(_sqlstate(e).startswith("22") for e in (exc, getattr(exc, "orig", None)))


def response_for(exc: Exception, clear_cookies: list[str] | None = None) -> Response:
    """The one mapping from an exception to its response; ``clear_cookies`` are the Set-Cookie
    values that clear both session cookies, given when the request carried either of them: an
    ``invalid_session`` clears them (CONTRACT §4), a ``session_expired`` does not (the browser
    still needs its refresh cookie)."""
    if isinstance(exc, AnonidError):
        clear = clear_cookies if exc.code == "invalid_session" else None
        return error_response(exc.code, exc.message, exc.headers, clear)
    if isinstance(exc, StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        if code is None:
            return Response(status_code=exc.status_code, headers=exc.headers)
        return error_response(code, headers=dict(exc.headers or {}))
    if isinstance(exc, RequestValidationError):
        return error_response("invalid_request")
    if is_database_outage(exc):
        log.warning("database unavailable: %s", type(exc).__name__)
        return error_response("unavailable", headers={"Retry-After": RETRY_AFTER_SECONDS})
    if isinstance(exc, sqlalchemy.exc.DataError) or _is_data_exception(exc):
        # PostgreSQL refused a value the validators let through: the client's input, not a bug.
        return error_response("invalid_request", "A value in the request cannot be stored.")
    log.error("unhandled error", exc_info=exc)
    return error_response("internal_error")


def install(app: FastAPI, cookies: CookieJar) -> None:
    async def handle(request: Request, exc: Exception) -> Response:
        return response_for(exc, cookies.clear if cookies.carried(request.cookies) else None)

    # Each class needs its own entry: Starlette's catch-all Exception handler answers but then
    # re-raises, and the server drops the connection under the client. asyncpg errors can escape
    # SQLAlchemy's wrapping (from connect() while PostgreSQL shuts down) or come from the hot pool,
    # which the session dependencies use too; so can the DBAPI errors SQLAlchemy's asyncpg adapter
    # raises when the hot pool opens a connection through the engine (not SQLAlchemyErrors).
    for exc_class in (
        AnonidError,
        RequestValidationError,
        StarletteHTTPException,
        sqlalchemy.exc.SQLAlchemyError,
        AsyncAdapt_asyncpg_dbapi.Error,  # the adapter's errors' own base in SQLAlchemy 2.0 and 2.1
        OSError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.InternalClientError,
        Exception,
    ):
        app.add_exception_handler(exc_class, handle)
