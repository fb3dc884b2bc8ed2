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
from app.lifecycle.anonymous import touch
from app.platform.request_auth import bearer_token
from app.services import Services
from app.sessions import Claims, IssuedToken, needs_renewal

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


@dataclass(frozen=True, slots=True)
class Session:
    claims: Claims
    via_cookie: bool


def wants_bearer(x_anonid_token: str | None) -> bool:
    """``X-Anonid-Token: bearer``: the session token goes in the body instead of a cookie."""
    return (x_anonid_token or "").strip().lower() == "bearer"


def bearer_wanted(request: Request) -> bool:
    return wants_bearer(request.headers.get("x-anonid-token"))


def session_token(authorization: str | None, cookie: str | None) -> tuple[str | None, bool]:
    """The session token and whether it came in the cookie: ``Authorization: Bearer`` wins (a
    malformed one is ``invalid_session``), else the session cookie."""
    if authorization is not None:
        token = bearer_token(authorization)
        if token is None:
            raise AnonidError("invalid_session")
        return token, False
    return (cookie or None), True


async def verified_session(
    svc: Services, token: str, via_cookie: bool
) -> tuple[Claims, IssuedToken | None]:
    """The token's claims, after sliding renewal: an anonymous session older than a day touches
    its account and, when it came as a cookie, gets a fresh token to send back."""
    claims = await svc.keys.verify(token)
    renewed = None
    if needs_renewal(claims):
        await touch(svc.pool, claims.sub, claims.sv)
        if via_cookie:
            renewed = svc.keys.issue(claims.sub, claims.anon, claims.sv)
    return claims, renewed


async def optional_session(request: Request) -> Session | None:
    """The caller's verified session, ``None`` without one; a bad token is ``invalid_session``."""
    svc = services(request)
    token, via_cookie = session_token(
        request.headers.get("authorization"), request.cookies.get(svc.cookies.name)
    )
    if token is None:
        return None
    claims, fresh = await verified_session(svc, token, via_cookie)
    if fresh is not None:
        request.state.renewed = fresh
    return Session(claims, via_cookie)


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


def renewed(request: Request) -> IssuedToken | None:
    return getattr(request.state, "renewed", None)


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
