"""The session and profile endpoints of CONTRACT §5 (the anonymous half of the API).

These are the hot paths, so they take no FastAPI dependencies: each verifies the session and
borrows an autocommit connection for its one statement inline. Solving two dependencies (one of
them a generator, with its exit stack) cost about a third of the CPU of ``GET /v1/me`` (see
``bench/NOTES.md``); the guarantees are the same: the statement is its own transaction and is
committed before the response is sent.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from app.api.deps import (
    Session,
    body_spec,
    lenient_session,
    raw_json,
    require_session,
    services,
)
from app.api.errors import responses
from app.api.responses import empty_response, private_response, session_response
from app.api.schemas import DataOut, SessionOut, User
from app.errors import AnonidError
from app.lifecycle import anonymous
from app.lifecycle.users import get_session_user, user_view

router = APIRouter(prefix="/v1")

OBJECT_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": True}
SESSION_ERRORS = responses("invalid_session", "csrf_rejected")


@router.post(
    "/anonymous",
    summary="Start an anonymous session (or return the current one)",
    status_code=201,
    responses={
        200: {"model": SessionOut, "description": "A valid session came with the request"},
        201: {"model": SessionOut, "description": "A new anonymous account"},
        **responses("rate_limited", "csrf_rejected"),
    },
)
async def create_anonymous(request: Request) -> Response:
    svc = services(request)
    session = await lenient_session(request)
    if session is not None:
        try:
            async with svc.autocommit.connect() as conn:
                row = await get_session_user(conn, session.claims.sub, session.claims.sv)
        except AnonidError:
            pass  # a stale session: give the visitor a fresh account instead
        else:
            return session_response(request, svc, row, 200)
    limiter = svc.extras.get("limiter")
    if limiter is not None:
        await limiter.hit_anonymous(request)
    async with svc.autocommit.connect() as conn:
        row = await anonymous.create_anonymous(conn, svc.settings.webhook_url_list)
    return session_response(request, svc, row, 201)


@router.get(
    "/me",
    summary="The current user",
    responses={200: {"model": User}, **responses("invalid_session")},
)
async def me(request: Request) -> Response:
    session = await require_session(request)
    svc = services(request)
    async with svc.autocommit.connect() as conn:
        row = await get_session_user(conn, session.claims.sub, session.claims.sv)
    return private_response(request, svc, user_view(row))


@router.patch(
    "/me/data",
    summary="Apply a JSON Merge Patch (RFC 7396) to the profile data",
    responses={
        200: {"model": DataOut},
        **responses(
            "invalid_session",
            "csrf_rejected",
            "invalid_json",
            "invalid_data",
            "data_too_large",
            "unsupported_media_type",
        ),
    },
    openapi_extra=body_spec(
        schema=OBJECT_SCHEMA, media_types=("application/merge-patch+json", "application/json")
    ),
)
async def patch_data(request: Request) -> Response:
    session = await require_session(request)
    svc = services(request)
    patch = await raw_json(request)
    async with svc.autocommit.connect() as conn:
        data = await anonymous.patch_data(
            conn, session.claims.sub, session.claims.sv, patch, svc.settings.data_max_bytes
        )
    return private_response(request, svc, {"data": data})


@router.put(
    "/me/data",
    summary="Replace the profile data",
    responses={
        200: {"model": DataOut},
        **responses(
            "invalid_session",
            "csrf_rejected",
            "invalid_json",
            "invalid_data",
            "data_too_large",
            "unsupported_media_type",
        ),
    },
    openapi_extra=body_spec(schema=OBJECT_SCHEMA),
)
async def put_data(request: Request) -> Response:
    session = await require_session(request)
    svc = services(request)
    data = await raw_json(request)
    async with svc.autocommit.connect() as conn:
        stored = await anonymous.replace_data(
            conn, session.claims.sub, session.claims.sv, data, svc.settings.data_max_bytes
        )
    return private_response(request, svc, {"data": stored})


@router.post(
    "/logout",
    summary="End this session and clear the cookie",
    status_code=204,
    responses=SESSION_ERRORS,
)
async def logout(request: Request, session: Session = Depends(require_session)) -> Response:
    return empty_response(services(request), clear_cookie=True)
