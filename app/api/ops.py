"""Operational endpoints: liveness, readiness, JWKS."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.deps import services
from app.api.errors import error_response, responses
from app.api.responses import json_response
from app.api.schemas import Health, Jwks
from app.platform.db import current_revision, migration_head

router = APIRouter()


@router.get("/healthz", summary="Liveness", responses={200: {"model": Health}})
async def healthz() -> Response:
    return json_response({"status": "ok"}, private=False)


@router.get(
    "/readyz",
    summary="Readiness: the database answers and is at the migration head",
    responses={200: {"model": Health}, **responses("not_ready")},
)
async def readyz(request: Request) -> Response:
    try:
        async with services(request).single_statement() as conn:
            revision = await current_revision(conn)
    except Exception:
        return error_response("not_ready", "The database does not answer.", {"Retry-After": "2"})
    if revision != migration_head():
        return error_response("not_ready", "The database is not at the migration head.")
    return json_response({"status": "ready"}, private=False)


@router.get(
    "/.well-known/jwks.json",
    summary="Public keys that verify session tokens",
    responses={200: {"model": Jwks}},
)
async def jwks(request: Request) -> Response:
    response = json_response(services(request).keys.jwks(), private=False)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
