"""The session and profile endpoints of CONTRACT §5 (the anonymous half of the API).

``POST /v1/anonymous``, ``GET /v1/me`` and ``PATCH /v1/me/data`` are the hot paths: they are
answered by ``app.api.hot`` in plain ASGI before FastAPI routes anything; the declarations here
document them and delegate to the same handlers. The others take no FastAPI dependencies on the
way in either: each verifies the session and borrows an autocommit connection for its statement.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api import hot
from app.api.deps import body_spec, raw_json, services, token_session
from app.api.errors import responses
from app.api.responses import empty_response, private_response
from app.api.schemas import DataOut, SessionOut, User
from app.errors import AnonidError
from app.lifecycle import anonymous
from app.sessions.store import end_session

router = APIRouter(prefix="/v1")

OBJECT_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": True}
SESSION_ERRORS = responses("invalid_session", "csrf_rejected")


@router.post(
    "/anonymous",
    summary="Start an anonymous session (or return the current one)",
    description=(
        "With `ANONID_ANONYMOUS_CHALLENGE=altcha`, a request without a valid session needs a "
        "solved challenge from `GET /v1/challenge` in `X-Anonid-Challenge` (base64 of the "
        "solution JSON); each solution makes one account. With the `before_user_created` hook "
        "on, the application may refuse (`hook_denied`); with `custom_claims`, the access token "
        "carries its claims under `app`."
    ),
    status_code=201,
    responses={
        200: {"model": SessionOut, "description": "A valid session came with the request"},
        201: {"model": SessionOut, "description": "A new anonymous account"},
        **responses(
            "rate_limited",
            "csrf_rejected",
            "challenge_required",
            "challenge_failed",
            "hook_denied",
            "hook_unavailable",
        ),
    },
    openapi_extra={
        "parameters": [
            {
                "name": "X-Anonid-Challenge",
                "in": "header",
                "required": False,
                "description": "Base64 of the ALTCHA solution JSON (when challenges are on).",
                "schema": {"type": "string"},
            }
        ]
    },
)
async def create_anonymous() -> Response:
    return hot.Delegate(hot.create_anonymous)


@router.get(
    "/me",
    summary="The current user",
    responses={200: {"model": User}, **responses("invalid_session")},
)
async def me() -> Response:
    return hot.Delegate(hot.me)


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
            "rate_limited",
        ),
    },
    openapi_extra=body_spec(
        schema=OBJECT_SCHEMA, media_types=("application/merge-patch+json", "application/json")
    ),
)
async def patch_data() -> Response:
    return hot.Delegate(hot.patch_data)


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
            "rate_limited",
        ),
    },
    openapi_extra=body_spec(schema=OBJECT_SCHEMA),
)
async def put_data(request: Request) -> Response:
    svc = services(request)
    claims = (await token_session(request)).claims
    await hot.limit_data_writes(svc, claims.sid)
    data = await raw_json(request)
    stored = await anonymous.replace_data(
        svc.pool, svc.settings, claims.sub, claims.sv, claims.sid, data
    )
    return private_response(request, svc, {"data": stored})


@router.post(
    "/logout",
    summary="End this session and clear both cookies",
    status_code=204,
    responses=SESSION_ERRORS,
)
async def logout(request: Request) -> Response:
    svc = services(request)
    claims = (await token_session(request)).claims
    if not await end_session(svc.pool, svc.settings, claims.sub, claims.sid):
        raise AnonidError("invalid_session")
    return empty_response(svc, clear_cookie=True)
