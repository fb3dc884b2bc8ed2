"""``GET /v1/me/export`` and ``DELETE /v1/me``: a user's own data, for anonymous users too."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from app.api.deps import Session, Transaction, require_session, services
from app.api.errors import responses
from app.api.responses import empty_response, private_response
from app.errors import AnonidError
from app.lifecycle.privacy import erase_user, export_user

router = APIRouter(prefix="/v1")


class Export(BaseModel):
    """Every stored fact about the caller; no hashes, token values or email bodies."""

    model_config = ConfigDict(extra="allow")
    exported_at: str
    user: dict[str, Any]
    pending_conversion: dict[str, Any] | None
    links: list[dict[str, Any]]
    emails: list[dict[str, Any]]
    events: list[dict[str, Any]]
    sessions: list[dict[str, Any]]


@router.get(
    "/me/export",
    summary="Export every stored fact about the caller",
    responses={200: {"model": Export}, **responses("invalid_session")},
)
async def export(
    request: Request,
    conn: AsyncConnection = Transaction,
    session: Session = Depends(require_session),
) -> Response:
    document = await export_user(conn, session.claims.sub)
    if document is None or document["user"]["session_version"] != session.claims.sv:
        raise AnonidError("invalid_session")
    return private_response(request, services(request), document)


@router.delete(
    "/me",
    summary="Erase the caller's account, its links and pending mail; ends the session",
    status_code=204,
    responses=responses("invalid_session", "csrf_rejected"),
)
async def erase(
    request: Request,
    conn: AsyncConnection = Transaction,
    session: Session = Depends(require_session),
) -> Response:
    svc = services(request)
    erased = await erase_user(
        conn, session.claims.sub, svc.settings.webhook_url_list, session_version=session.claims.sv
    )
    if not erased:
        raise AnonidError("invalid_session")
    return empty_response(svc, clear_cookie=True)
