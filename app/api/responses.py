"""Response builders: orjson bodies, ``no-store`` on anything personal, session cookies or tokens."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from app.api.deps import bearer_wanted
from app.lifecycle.users import user_view
from app.services import Services
from app.sessions.store import Pair

NO_STORE = {"Cache-Control": "no-store"}


def json_response(content: Any, status: int = 200, *, private: bool = True) -> Response:
    return Response(
        orjson.dumps(content),
        status_code=status,
        media_type="application/json",
        headers=NO_STORE if private else None,
    )


def session_body(svc: Services, pair: Pair, bearer: bool) -> tuple[dict[str, Any], list[str]]:
    """The ``S`` body of a session and its Set-Cookie values: both cookies for browsers; with
    ``bearer``, both tokens in the body instead and no cookie (CONTRACT §4)."""
    body: dict[str, Any] = {"user": user_view(pair.user), "expires_in": pair.access.expires_in}
    if bearer:
        body["access_token"] = pair.access.token
        body["token_type"] = "Bearer"  # noqa: S105 (a scheme name, not a secret)
        body["refresh_token"] = pair.refresh_token
        return body, []
    return body, svc.cookies.set(pair.access.token, pair.refresh_token, pair.max_age)


def session_response(
    request: Request, svc: Services, pair: Pair, status: int = 200, **extra: Any
) -> Response:
    """A new or rotated session: cookies for browsers, the tokens in the body only on request."""
    body, cookies = session_body(svc, pair, bearer_wanted(request))
    response = json_response({**body, **extra}, status)
    for cookie in cookies:
        response.headers.append("set-cookie", cookie)
    return response


def private_response(request: Request, svc: Services, content: Any, status: int = 200) -> Response:
    """User data, never cached (a transparent renewal's cookies are added on the way out)."""
    return json_response(content, status)


def empty_response(svc: Services, *, clear_cookie: bool = False) -> Response:
    response = Response(status_code=204, headers=NO_STORE)
    if clear_cookie:
        for cookie in svc.cookies.clear:
            response.headers.append("set-cookie", cookie)
    return response
