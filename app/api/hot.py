"""The hottest endpoints as plain ASGI: ``POST /v1/anonymous``, ``GET /v1/me``,
``PATCH /v1/me/data`` and ``POST /v1/session/refresh`` (CONTRACT §4, §5).

``HotPaths`` sits innermost of the middleware, so these requests pass the request guard (CSRF,
media types, body size), CORS and the observer (request id, access log, metrics) like every other
route, and then skip FastAPI's routing and dependency solving; their statements run on the hot
asyncpg pool (``app.platform.pgpool``). Both layers cost more CPU than PostgreSQL's own work on these
paths (``bench/NOTES.md``). Their FastAPI declarations in ``public.py`` document them and, when
reached (a mount with another prefix), delegate here, so there is one implementation.

Guarantees, the same as the rest of the API: each statement is its own transaction, committed
before the response is sent; a session is verified on every request (signature and expiry of
the access token, then, in the same statement as the request's own work, the user, its session
version and the session's liveness: one round trip while the access token is fresh); an expired
access cookie is renewed from the refresh cookie (``deps.authenticate``: one more statement);
errors are mapped by ``errors.response_for``; personal responses are ``no-store``.

``HotPaths`` also adds the cookies of a transparent renewal made by a FastAPI route's session
dependency to whatever that route answers (``_with_renewal``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import orjson
from fastapi.routing import iter_route_contexts
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.deps import (
    RENEWED,
    Session,
    authenticate,
    parse_json,
    renewal_cookies,
    wants_bearer,
)
from app.api.errors import response_for
from app.api.responses import session_body
from app.errors import AnonidError
from app.hooks import challenge
from app.hooks.calls import before_user_created
from app.hooks.challenge import KEY_NAME
from app.lifecycle import anonymous
from app.lifecycle.users import get_session_user, user_view
from app.platform.ratelimit import client_ip
from app.platform.request_auth import request_cookies
from app.services import Services
from app.sessions.refresh import redeem
from app.sessions.store import Pair, start, with_app_claims
from app.sessions.useragent import summarise

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

    def user_agent(self) -> str | None:
        return summarise(self.header(b"user-agent"))

    def forwarded_for(self) -> list[str]:
        return [v.decode("latin-1") for k, v in self.scope["headers"] if k == b"x-forwarded-for"]


@dataclass(slots=True)
class Reply:
    status: int
    content: Any
    cookies: list[str] = field(default_factory=list)


async def optional_session(req: HotRequest) -> Session | None:
    """The caller's session from the token alone (``deps.authenticate``): the statement that
    follows checks the user, its session version and the session's liveness in the same round
    trip. ``None`` without one; a bad token is ``invalid_session``."""
    return await authenticate(req.svc, req.header(b"authorization"), req.cookies)


async def require_session(req: HotRequest) -> Session:
    session = await optional_session(req)
    if session is None:
        raise AnonidError("invalid_session")
    return session


def _session_reply(req: HotRequest, pair: Pair, status: int) -> Reply:
    """A new or rotated session: cookies for browsers, the tokens in the body only on request."""
    body, cookies = session_body(req.svc, pair, wants_bearer(req.header(b"x-anonid-token")))
    return Reply(status, body, cookies)


def _private(req: HotRequest, session: Session, content: Any) -> Reply:
    """User data; carries the renewed cookies when an expired access cookie was renewed."""
    pair = session.renewed
    return Reply(200, content, [] if pair is None else renewal_cookies(req.svc, pair))


async def _json_body(receive: Receive) -> Any:
    return parse_json(await _raw_body(receive))


async def _raw_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _session_user(req: HotRequest, session: Session) -> Any:
    """The user of a live session: read by the renewal already, else one statement."""
    if session.user is not None:
        return session.user
    claims = session.claims
    svc = req.svc
    return await get_session_user(svc.pool, svc.settings, claims.sub, claims.sv, claims.sid)


async def _same_user(req: HotRequest, session: Session) -> Reply:
    """``POST /v1/anonymous`` with a live session: the same user, no new account. A browser keeps
    its session (renewed if its access cookie had expired); a bearer client, which cannot be
    handed back a refresh token anonid does not keep, gets a new session of the same user."""
    if session.renewed is not None:
        return _session_reply(req, session.renewed, 200)
    row = await _session_user(req, session)
    if session.via_cookie:
        remaining = max(0, session.claims.exp - int(time.time()))
        return Reply(200, {"user": user_view(row), "expires_in": remaining})
    claims = req.svc.hooks.custom_claims
    pair = await start(req.svc.pool, req.svc, row, user_agent=req.user_agent(), sign_later=claims)
    return _session_reply(req, await with_app_claims(req.svc, pair), 200)


async def create_anonymous(req: HotRequest, receive: Receive) -> Reply:
    """``POST /v1/anonymous``: the current session's user (200), else a new guest and its first
    session (201), in one statement, which it shares with the other new guests of the moment
    (``anonymous.GuestInserts``). With ``ANONID_ANONYMOUS_CHALLENGE=altcha`` the solution is
    verified before any statement and spent by that one statement; the ``before_user_created``
    hook is asked before it, ``custom_claims`` after it, with no connection held (CONTRACT §16).
    With both off, the cost is that of the statement alone."""
    svc = req.svc
    try:
        session = await optional_session(req)
        if session is not None:
            return await _same_user(req, session)
    except AnonidError:
        pass  # a bad or stale session: the visitor gets a fresh account
    limiter = svc.extras.get("limiter")
    if limiter is not None:
        await limiter.hit_anonymous(req.peer(), req.forwarded_for())
    settings = svc.settings
    solved = None
    if settings.anonymous_challenge == "altcha":
        solved = challenge.check(req.header(b"x-anonid-challenge"), svc.server_secrets[KEY_NAME])
    hooks = svc.hooks
    if hooks.before_user_created:
        ip = client_ip(req.peer(), req.forwarded_for(), settings.proxies)
        await before_user_created(hooks, "anonymous", ip, req.header(b"user-agent"))
    guest = anonymous.new_guest(svc.extras["guests"], solved)
    pair = await start(
        svc.pool, svc, guest, user_agent=req.user_agent(), sign_later=hooks.custom_claims
    )
    if hooks.custom_claims:
        pair = await with_app_claims(svc, pair)
    return _session_reply(req, pair, 201)


async def me(req: HotRequest, receive: Receive) -> Reply:
    """``GET /v1/me``: one statement while the access token is fresh."""
    session = await require_session(req)
    return _private(req, session, user_view(await _session_user(req, session)))


async def limit_data_writes(svc: Services, session_id: UUID) -> None:
    """Count one profile data write (``PATCH`` or ``PUT``) against the session's limit: in memory
    or one Redis call, never a database round trip. Raises ``rate_limited``."""
    limiter = svc.extras.get("limiter")
    if limiter is not None:
        await limiter.hit_data(session_id)


async def patch_data(req: HotRequest, receive: Receive) -> Reply:
    """``PATCH /v1/me/data``: an RFC 7396 merge patch applied atomically in the database, in the
    statement that checks the session."""
    session = await require_session(req)
    svc = req.svc
    claims = session.claims
    await limit_data_writes(svc, claims.sid)
    patch = await _json_body(receive)
    data = await anonymous.patch_data(
        svc.pool, svc.settings, claims.sub, claims.sv, claims.sid, patch
    )
    return _private(req, session, {"data": data})


def presented(body: bytes, cookies: dict[str, str], refresh_name: str) -> tuple[str, bool]:
    """The refresh token of a ``POST /v1/session/refresh`` and whether it came in the body
    (``{"refresh_token": …}``; without one, the refresh cookie)."""
    if body:
        document: Any = parse_json(body)
        token = document.get("refresh_token") if isinstance(document, dict) else None
        if isinstance(token, str) and token:
            return token, True
    cookie = cookies.get(refresh_name)
    if not cookie:
        raise AnonidError("invalid_session", "No refresh token came with the request.")
    return cookie, False


async def refresh_session(req: HotRequest, receive: Receive) -> Reply:
    """``POST /v1/session/refresh``: the rotated pair (``app.sessions.refresh.redeem``), in the
    body when the token came in it or with ``X-Anonid-Token: bearer``, else as both cookies."""
    svc = req.svc
    token, in_body = presented(await _raw_body(receive), req.cookies, svc.cookies.refresh_name)
    pair = await redeem(svc.pool, svc, token)
    bearer = in_body or wants_bearer(req.header(b"x-anonid-token"))
    body, cookies = session_body(svc, pair, bearer)
    return Reply(200, body, cookies)


Handler = Callable[[HotRequest, Receive], Awaitable[Reply]]

HANDLERS: dict[tuple[str, str], Handler] = {
    ("POST", "/v1/anonymous"): create_anonymous,
    ("GET", "/v1/me"): me,
    ("PATCH", "/v1/me/data"): patch_data,
    ("POST", "/v1/session/refresh"): refresh_session,
}


async def run(handler: Handler, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one request with ``handler``; any exception becomes its mapped error response."""
    svc: Services = scope["app"].state.services
    req = HotRequest(scope, svc)
    try:
        reply = await handler(req, receive)
    except Exception as exc:
        carried = svc.cookies.carried(req.cookies)
        error = response_for(exc, svc.cookies.clear if carried else None)
        await error(scope, receive, send)
        return
    body = orjson.dumps(reply.content)
    headers = [*JSON_NO_STORE, (b"content-length", str(len(body)).encode())]
    for cookie in reply.cookies:
        headers.append((b"set-cookie", cookie.encode("latin-1")))
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
            await self.app(scope, receive, _with_renewal(scope, send))
            return
        await self.app(scope, receive, send)


def _with_renewal(scope: Scope, send: Send) -> Send:
    """``send`` adding the cookies of a transparent renewal (``deps.RENEWED``) to the response,
    whatever it is (an error too: the old refresh token is spent), unless the response sets or
    clears those cookies itself (a new session, a logout, an ``invalid_session``)."""

    async def send_renewed(message: Message) -> None:
        if message["type"] == "http.response.start":
            renewed = scope.get("state", {}).get(RENEWED)
            if renewed:
                message["headers"] = _add_cookies(list(message.get("headers", ())), renewed)
        await send(message)

    return send_renewed


def _add_cookies(
    headers: list[tuple[bytes, bytes]], cookies: list[str]
) -> list[tuple[bytes, bytes]]:
    already = {
        value.split(b"=", 1)[0].strip() for key, value in headers if key.lower() == b"set-cookie"
    }
    for cookie in cookies:
        if cookie.split("=", 1)[0].encode() not in already:
            headers.append((b"set-cookie", cookie.encode("latin-1")))
    return headers
