"""Response builders: orjson bodies, ``no-store`` on anything personal, session cookie or token."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from sqlalchemy.engine import Row
from starlette.responses import Response

from app.api.deps import bearer_wanted, renewed
from app.lifecycle.users import user_view
from app.services import Services

NO_STORE = {"Cache-Control": "no-store"}


def json_response(content: Any, status: int = 200, *, private: bool = True) -> Response:
    return Response(
        orjson.dumps(content),
        status_code=status,
        media_type="application/json",
        headers=NO_STORE if private else None,
    )


def session_response(
    request: Request, svc: Services, row: Row[Any], status: int = 200, **extra: Any
) -> Response:
    """Start or renew a session: a cookie for browsers, the token in the body only on request."""
    issued = svc.keys.issue(row.id, row.is_anonymous, row.session_version)
    body: dict[str, Any] = {"user": user_view(row), "expires_in": issued.expires_in, **extra}
    if bearer_wanted(request):
        body["access_token"] = issued.token
        body["token_type"] = "Bearer"  # noqa: S105 (a scheme name, not a secret)
        return json_response(body, status)
    response = json_response(body, status)
    response.headers.append("set-cookie", svc.cookies.set(issued))
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
