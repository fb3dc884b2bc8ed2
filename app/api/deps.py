"""Request dependencies: the transaction, the session, and JSON bodies parsed with orjson."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import AnonidError
from app.lifecycle.users import get_session_user, legacy_user
from app.platform.ratelimit import client_ip
from app.platform.request_auth import bearer_token
from app.services import Services
from app.sessions.access import Claims, LegacySession
from app.sessions.refresh import redeem
from app.sessions.store import Pair, start, with_app_claims
from app.sessions.useragent import summarise
from app.settings import Settings

M = TypeVar("M", bound=BaseModel)


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


async def _transaction(request: Request) -> AsyncIterator[AsyncConnection]:
    async with services(request).engine.begin() as conn:
        yield conn


async def _autocommit(request: Request) -> AsyncIterator[AsyncConnection]:
    async with services(request).single_statement() as conn:
        yield conn


# scope="function": commit (or roll back) before the response is sent, so a failed commit is
# reported to the client instead of a success that did not happen.
Transaction = Depends(_transaction, scope="function")
# For requests that are a single statement: that statement is the transaction.
SingleStatement = Depends(_autocommit, scope="function")


@dataclass(slots=True)
class Session:
    """The caller's session: the access token's claims, whether it came as a cookie, the pair a
    renewal issued (an expired access cookie renewed from the refresh cookie), and the user row
    when a statement already read it."""

    claims: Claims
    via_cookie: bool
    renewed: Pair | None = None
    user: Any = None


RENEWED = "anonid_renewed"  # scope["state"] key: Set-Cookie values of a transparent renewal


def wants_bearer(x_anonid_token: str | None) -> bool:
    """``X-Anonid-Token: bearer``: the tokens go in the body instead of cookies."""
    return (x_anonid_token or "").strip().lower() == "bearer"


def bearer_wanted(request: Request) -> bool:
    return wants_bearer(request.headers.get("x-anonid-token"))


def user_agent(request: Request) -> str | None:
    """The short summary of the caller's ``User-Agent`` stored with a new session."""
    return summarise(request.headers.get("user-agent"))


def client_address(request: Request, settings: Settings) -> str | None:
    """The client's IP as the rate limits see it (``X-Forwarded-For`` from trusted proxies)."""
    peer = request.client.host if request.client else None
    return client_ip(peer, request.headers.getlist("x-forwarded-for"), settings.proxies)


async def authenticate(
    svc: Services, authorization: str | None, cookies: dict[str, str]
) -> Session | None:
    """The caller's session from ``Authorization: Bearer`` (which wins; a malformed one is
    ``invalid_session``) or the cookies, ``None`` without one. Checks the token only (no database
    work while it is fresh); an expired access cookie (or none) with a refresh cookie is renewed
    here, transparently (CONTRACT §4), which costs one statement. ``session_expired`` for an
    expired token that cannot be renewed, ``invalid_session`` for anything else."""
    if authorization is not None:
        token = bearer_token(authorization)
        if token is None:
            raise AnonidError("invalid_session")
        return Session(await svc.access.verify(token), False)
    access = cookies.get(svc.cookies.name) or None
    refresh = cookies.get(svc.cookies.refresh_name) or None
    if access is not None:
        try:
            return Session(await svc.access.verify(access), True)
        except LegacySession as legacy:
            if refresh is None:
                pair = await _exchange_legacy(svc, legacy)
                return Session(pair.access.claims, True, renewed=pair, user=pair.user)
        except AnonidError as exc:
            if exc.code != "session_expired" or refresh is None:
                raise
    elif refresh is None:
        return None
    pair = await redeem(svc.pool, svc, refresh)
    return Session(pair.access.claims, True, renewed=pair, user=pair.user)


async def _exchange_legacy(svc: Services, legacy: LegacySession) -> Pair:
    """A browser's version-1 cookie (still valid, its user and session version current) becomes
    a session of its own, once: the answer sets both cookies, so the old token is not seen
    again. Upgrading anonid keeps every guest."""
    row = await legacy_user(svc.pool, legacy.sub, legacy.sv)
    if row is None:
        raise AnonidError("invalid_session")
    return await with_app_claims(svc, await start(svc.pool, svc, row, user_agent=None))


def renewal_cookies(svc: Services, pair: Pair) -> list[str]:
    return svc.cookies.set(pair.access.token, pair.refresh_token, pair.max_age)


async def _authenticate(request: Request, svc: Services) -> Session | None:
    session = await authenticate(svc, request.headers.get("authorization"), request.cookies)
    if session is not None and session.renewed is not None:
        # Sent with whatever the route answers (app.api.hot.HotPaths adds them).
        request.scope.setdefault("state", {})[RENEWED] = renewal_cookies(svc, session.renewed)
    return session


async def token_session(request: Request) -> Session:
    """The caller's session from its token alone (renewed if need be), for routes whose own
    statement checks the user, session version and liveness, as the hot paths do."""
    session = await _authenticate(request, services(request))
    if session is None:
        raise AnonidError("invalid_session")
    return session


async def optional_session(request: Request) -> Session | None:
    """The caller's verified, live session (``None`` without one): the token, then the user, its
    session version and the session in the database. A renewal's cookies go on the response,
    whatever it is."""
    svc = services(request)
    session = await _authenticate(request, svc)
    if session is None:
        return None
    if session.renewed is None:
        claims = session.claims
        session.user = await get_session_user(
            svc.pool, svc.settings, claims.sub, claims.sv, claims.sid
        )
    return session


async def lenient_session(request: Request) -> Session | None:
    """Like ``optional_session`` but a bad token counts as none (for endpoints that start one)."""
    try:
        return await optional_session(request)
    except AnonidError:
        return None


async def require_session(request: Request) -> Session:
    session = await optional_session(request)
    if session is None:
        raise AnonidError("invalid_session")
    return session


def json_body(model: type[M], code: str = "invalid_request") -> Callable[[Request], Awaitable[M]]:
    """Parse the body with orjson (strict UTF-8, no lone surrogates) and validate it."""

    async def parse(request: Request) -> M:
        data = await raw_json(request)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise AnonidError(code, f"{where}: {first['msg']}") from None

    return parse


async def raw_json(request: Request) -> Any:
    return parse_json(await request.body())


def parse_json(body: bytes) -> Any:
    """A request body as JSON (orjson: strict UTF-8, no lone surrogates), or ``invalid_json``."""
    if not body:
        raise AnonidError("invalid_json", "The request needs a JSON body.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise AnonidError("invalid_json") from None


def body_spec(
    model: type[BaseModel] | None = None,
    *,
    schema: dict[str, Any] | None = None,
    media_types: tuple[str, ...] = ("application/json",),
) -> dict[str, Any]:
    """``openapi_extra`` describing a JSON request body (parsed by ``json_body``, not FastAPI)."""
    body_schema = schema if schema is not None else model.model_json_schema()  # type: ignore[union-attr]
    return {
        "requestBody": {
            "required": True,
            "content": {mt: {"schema": body_schema} for mt in media_types},
        }
    }
