"""The three hottest endpoints as plain ASGI: ``POST /v1/anonymous``, ``GET /v1/me`` and
``PATCH /v1/me/data`` (CONTRACT §5).

``HotPaths`` sits innermost of the middleware, so these requests pass the request guard (CSRF,
media types, body size), CORS and the observer (request id, access log, metrics) like every other
route, and then skip FastAPI's routing and dependency solving; their statements run on the hot
asyncpg pool (``app.platform.pgpool``). Both layers cost more CPU than PostgreSQL's own work on these
paths (``bench/NOTES.md``). Their FastAPI declarations in ``public.py`` document them and, when
reached (a mount with another prefix), delegate here, so there is one implementation.

Guarantees, the same as the rest of the API: each statement is its own transaction, committed
before the response is sent; a session is verified (signature, expiry, then user and session
version in the database) on every request; sliding renewal as in ``deps.optional_session``;
errors are mapped by ``errors.response_for``; personal responses are ``no-store``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson
from fastapi.routing import iter_route_contexts
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.deps import parse_json, session_token, verified_session, wants_bearer
from app.api.errors import response_for
from app.api.responses import session_body
from app.errors import AnonidError
from app.lifecycle import anonymous
from app.lifecycle.users import get_session_user, user_view
from app.platform.request_auth import request_cookies
from app.services import Services
from app.sessions import Claims, IssuedToken

JSON_NO_STORE = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


class HotRequest:
    """What the hot endpoints read from a request, parsed once from the ASGI scope."""

    __slots__ = ("_cookies", "headers", "scope", "svc")

    def __init__(self, scope: Scope, svc: Services) -> None:
        self.scope = scope
        self.svc = svc
        headers: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key, value)  # the first of repeated headers, as Starlette reads
        self.headers = headers
        self._cookies: dict[str, str] | None = None

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    @property
    def cookies(self) -> dict[str, str]:
        if self._cookies is None:
            self._cookies = request_cookies(self.scope["headers"])
        return self._cookies

    def peer(self) -> str | None:
        client = self.scope.get("client")
        return client[0] if client else None

    def forwarded_for(self) -> list[str]:
        return [v.decode("latin-1") for k, v in self.scope["headers"] if k == b"x-forwarded-for"]


@dataclass(slots=True)
class Session:
    claims: Claims
    renewed: IssuedToken | None


@dataclass(slots=True)
class Reply:
    status: int
    content: Any
    cookie: str | None = None


async def optional_session(req: HotRequest) -> Session | None:
    """The verified session, ``None`` without one; a bad token is ``invalid_session``."""
    svc = req.svc
    token, via_cookie = session_token(
        req.header(b"authorization"), req.cookies.get(svc.cookies.name)
    )
    if token is None:
        return None
    claims, renewed = await verified_session(svc, token, via_cookie)
    return Session(claims, renewed)


async def require_session(req: HotRequest) -> Session:
    session = await optional_session(req)
    if session is None:
        raise AnonidError("invalid_session")
    return session


def _session_reply(req: HotRequest, row: Any, status: int) -> Reply:
    """Start or renew a session: a cookie for browsers, the token in the body only on request."""
    body, cookie = session_body(req.svc, row, wants_bearer(req.header(b"x-anonid-token")))
    return Reply(status, body, cookie)


def _private(req: HotRequest, session: Session, content: Any) -> Reply:
    """User data; carries the renewed session cookie when sliding renewal issued one."""
    fresh = session.renewed
    return Reply(200, content, None if fresh is None else req.svc.cookies.set(fresh))


async def _json_body(receive: Receive) -> Any:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return parse_json(b"".join(chunks))


async def create_anonymous(req: HotRequest, receive: Receive) -> Reply:
    """``POST /v1/anonymous``: the current session's user (200), else a new guest (201)."""
    svc = req.svc
    try:
        session = await optional_session(req)
    except AnonidError:
        session = None  # a bad token: the visitor gets a fresh account
    if session is not None:
        try:
            row = await get_session_user(svc.pool, session.claims.sub, session.claims.sv)
        except AnonidError:
            pass  # a stale session: give the visitor a fresh account instead
        else:
            return _session_reply(req, row, 200)
    limiter = svc.extras.get("limiter")
    if limiter is not None:
        await limiter.hit_anonymous(req.peer(), req.forwarded_for())
    row = await anonymous.create_anonymous(svc.pool, svc.settings.webhook_url_list)
    return _session_reply(req, row, 201)


async def me(req: HotRequest, receive: Receive) -> Reply:
    """``GET /v1/me``."""
    session = await require_session(req)
    row = await get_session_user(req.svc.pool, session.claims.sub, session.claims.sv)
    return _private(req, session, user_view(row))


async def limit_data_writes(svc: Services, user_id: UUID) -> None:
    """Count one profile data write (``PATCH`` or ``PUT``) against the session's limit: in memory
    or one Redis call, never a database round trip. Raises ``rate_limited``."""
    limiter = svc.extras.get("limiter")
    if limiter is not None:
        await limiter.hit_data(user_id)


async def patch_data(req: HotRequest, receive: Receive) -> Reply:
    """``PATCH /v1/me/data``: an RFC 7396 merge patch applied atomically in the database."""
    session = await require_session(req)
    svc = req.svc
    await limit_data_writes(svc, session.claims.sub)
    patch = await _json_body(receive)
    data = await anonymous.patch_data(
        svc.pool, session.claims.sub, session.claims.sv, patch, svc.settings.data_max_bytes
    )
    return _private(req, session, {"data": data})


Handler = Callable[[HotRequest, Receive], Awaitable[Reply]]

HANDLERS: dict[tuple[str, str], Handler] = {
    ("POST", "/v1/anonymous"): create_anonymous,
    ("GET", "/v1/me"): me,
    ("PATCH", "/v1/me/data"): patch_data,
}


async def run(handler: Handler, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one request with ``handler``; any exception becomes its mapped error response."""
    svc: Services = scope["app"].state.services
    req = HotRequest(scope, svc)
    try:
        reply = await handler(req, receive)
    except Exception as exc:
        sent_cookie = svc.cookies.name in req.cookies
        error = response_for(exc, svc.cookies.clear if sent_cookie else None)
        await error(scope, receive, send)
        return
    body = orjson.dumps(reply.content)
    headers = [*JSON_NO_STORE, (b"content-length", str(len(body)).encode())]
    if reply.cookie is not None:
        headers.append((b"set-cookie", reply.cookie.encode("latin-1")))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Delegate(Response):
    """What a FastAPI declaration of a hot endpoint returns: the hot handler answers."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await run(self.handler, scope, receive, send)


class HotPaths:
    """Plain ASGI: the hot endpoints answered directly, everything else passed to FastAPI."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes  # the app's route list, read once routes are all registered
        self._labels: dict[tuple[str, str], BaseRoute] | None = None

    def _route(self, key: tuple[str, str]) -> BaseRoute | None:
        if self._labels is None:
            # The FastAPI declarations, so logs and metrics name these routes as before, without
            # the observer matching the path against every documented template. FastAPI keeps
            # included routers as such (not their routes) in app.routes since 0.165.
            self._labels = {
                (method, context.path or ""): context.original_route
                for context in iter_route_contexts(self.routes)
                for method in getattr(context.original_route, "methods", None) or ()
            }
        return self._labels.get(key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            key = (scope["method"], scope["path"])
            handler = HANDLERS.get(key)
            if handler is not None and not scope.get("root_path"):
                route = self._route(key)
                if route is not None:
                    scope["route"] = route
                await run(handler, scope, receive, send)
                return
        await self.app(scope, receive, send)
