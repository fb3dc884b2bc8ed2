"""Response builders: orjson bodies, ``no-store`` on anything personal, session cookie or token."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from sqlalchemy.engine import Row
from starlette.responses import Response

from app.api.deps import bearer_wanted, renewed
from app.lifecycle.users import user_view
from app.platform.pgpool import row_mapping
from app.services import Services

NO_STORE = {"Cache-Control": "no-store"}


def json_response(content: Any, status: int = 200, *, private: bool = True) -> Response:
    return Response(
        orjson.dumps(content),
        status_code=status,
        media_type="application/json",
        headers=NO_STORE if private else None,
    )


def session_body(svc: Services, row: Any, bearer: bool) -> tuple[dict[str, Any], str | None]:
    """A new session for the user row: the ``S`` body and the Set-Cookie value (a cookie for
    browsers; the token in the body instead when ``bearer``)."""
    user = row_mapping(row)
    issued = svc.keys.issue(user["id"], user["is_anonymous"], user["session_version"])
    body: dict[str, Any] = {"user": user_view(user), "expires_in": issued.expires_in}
    if bearer:
        body["access_token"] = issued.token
        body["token_type"] = "Bearer"  # noqa: S105 (a scheme name, not a secret)
        return body, None
    return body, svc.cookies.set(issued)


def session_response(
    request: Request, svc: Services, row: Row[Any], status: int = 200, **extra: Any
) -> Response:
    """Start or renew a session: a cookie for browsers, the token in the body only on request."""
    body, cookie = session_body(svc, row, bearer_wanted(request))
    response = json_response({**body, **extra}, status)
    if cookie is not None:
        response.headers.append("set-cookie", cookie)
    return response


def private_response(request: Request, svc: Services, content: Any, status: int = 200) -> Response:
    """User data; carries the renewed session cookie when sliding renewal issued one."""
    response = json_response(content, status)
    fresh = renewed(request)
    if fresh is not None:
        response.headers.append("set-cookie", svc.cookies.set(fresh))
    return response


def empty_response(svc: Services, *, clear_cookie: bool = False) -> Response:
    response = Response(status_code=204, headers=NO_STORE)
    if clear_cookie:
        response.headers.append("set-cookie", svc.cookies.clear)
    return response
