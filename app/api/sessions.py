"""Session endpoints of CONTRACT §4/§5: refreshing a session, and a user's own sessions.

``POST /v1/session/refresh`` redeems a refresh token from the JSON body (apps, servers) or from
the refresh cookie (browsers, and backends forwarding it); the answer is the rotated pair, in the
body when the token came in the body or with ``X-Anonid-Token: bearer``, else as both cookies
(which a backend passes on). It is a session-starting path for the request guard: a browser on
another site can never make it rotate a visitor's cookies.
"""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from app.api import hot
from app.api.deps import Session, require_session, services
from app.api.errors import responses
from app.api.responses import empty_response, json_response
from app.api.schemas import SessionOut, SessionsOut
from app.errors import AnonidError
from app.sessions.store import end_session, list_sessions

router = APIRouter(prefix="/v1")

REFRESH_BODY = {
    "requestBody": {
        "required": False,
        "description": "Without a body (or without `refresh_token`), the refresh cookie is used.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"refresh_token": {"type": "string"}},
                }
            }
        },
    }
}


@router.post(
    "/session/refresh",
    summary="Rotate a refresh token: a new access token and a new refresh token",
    description=(
        'The refresh token comes in the body (`{"refresh_token": …}`) or as the refresh '
        "cookie. Every use rotates it. A token already rotated is still accepted for "
        "`ANONID_REFRESH_REUSE_SECONDS`; later, it ends its whole session "
        "(`user.refresh_reused`)."
    ),
    responses={
        200: {"model": SessionOut},
        **responses(
            "invalid_session",
            "invalid_json",
            "csrf_rejected",
            "unsupported_media_type",
            expiring=False,
        ),
    },
    openapi_extra=REFRESH_BODY,
)
async def refresh() -> Response:
    # Answered by app.api.hot (plain ASGI, like the other hot paths); declared here for the
    # OpenAPI document and for a mount under another prefix.
    return hot.Delegate(hot.refresh_session)


@router.get(
    "/me/sessions",
    summary="The caller's live sessions",
    responses={200: {"model": SessionsOut}, **responses("invalid_session")},
)
async def my_sessions(request: Request, session: Session = Depends(require_session)) -> Response:
    svc = services(request)
    claims = session.claims
    async with svc.single_statement() as conn:
        listed = await list_sessions(conn, svc.settings, claims.sub, claims.sid)
    return json_response({"sessions": listed})


@router.delete(
    "/me/sessions/{session_id}",
    summary="End one of the caller's sessions (its cookies are cleared if it is this one)",
    status_code=204,
    responses=responses("invalid_session", "not_found", "csrf_rejected"),
)
async def end_my_session(
    request: Request, session_id: str, session: Session = Depends(require_session)
) -> Response:
    svc = services(request)
    try:
        sid = UUID(session_id)
    except ValueError:
        raise AnonidError("not_found", "There is no such session.") from None
    claims = session.claims
    if not await end_session(svc.pool, svc.settings, claims.sub, sid, "ended_by_user"):
        raise AnonidError("not_found", "There is no such session.")
    return empty_response(svc, clear_cookie=sid == claims.sid)
