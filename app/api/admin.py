"""The admin API (``/v1/admin/*``), behind ``ANONID_ADMIN_API_KEY`` as ``Authorization: Bearer``.

Without a configured key every admin call is ``401 unauthorized``. The key is compared in constant
time. Admin calls are authenticated by a header, not a cookie, so the CSRF rule does not apply.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any, Literal
from uuid import UUID

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from app.api.deps import SingleStatement, Transaction, body_spec, raw_json, services
from app.api.errors import responses
from app.api.responses import empty_response, json_response
from app.api.schemas import User
from app.errors import AnonidError
from app.lifecycle.addresses import email_key
from app.lifecycle.cull import MAX_OLDER_THAN_DAYS, MIN_OLDER_THAN_DAYS, run_cull
from app.lifecycle.privacy import erase_user
from app.lifecycle.rollup import MAX_DAYS
from app.lifecycle.stats import DAYS, collect_stats
from app.lifecycle.users import USER_COLUMNS, get_user, user_view

_bearer = HTTPBearer(auto_error=False, description="The value of ANONID_ADMIN_API_KEY.")


async def require_admin(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> None:
    key = services(request).settings.admin_api_key
    if key is None or credentials is None:
        raise AnonidError("unauthorized", headers={"WWW-Authenticate": "Bearer"})
    given = credentials.credentials.encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, key.get_secret_value().encode()):
        raise AnonidError("unauthorized", headers={"WWW-Authenticate": "Bearer"})


router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=responses("unauthorized"),
)

MAX_PAGE = 500


class UserPage(BaseModel):
    users: list[User]
    next_cursor: str | None


class CullRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    dry_run: bool = False
    older_than_days: int | None = Field(None, ge=MIN_OLDER_THAN_DAYS, le=MAX_OLDER_THAN_DAYS)


class CullResult(BaseModel):
    cutoff: str
    matched: int
    deleted: int
    batches: int
    dry_run: bool


class DailyStats(BaseModel):
    date: str
    anonymous_created: int
    conversions_started: int
    converted: int
    merged: int
    culled: int


class Stats(BaseModel):
    users: dict[Literal["anonymous", "pending", "registered"], int]
    daily: list[DailyStats]
    conversion_rate_30d: float
    mau: dict[str, Any]
    outbox: dict[Literal["pending", "failed"], int]


def encode_cursor(user_id: UUID) -> str:
    return base64.urlsafe_b64encode(user_id.bytes).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> UUID:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return UUID(bytes=raw)
    except (ValueError, binascii.Error):
        raise AnonidError("invalid_request", "cursor: not a cursor from this API") from None


def parse_user_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise AnonidError("not_found") from None


# State rules match ``users.state_of``; pending = an unexpired conversion request. Each filter is
# served by an index (CONTRACT §12): the keyset walk of the primary key (or of the anonymous ids'
# partial index: the oldest ids are mostly registered), the partial indexes on updated_at
# (anonymous, registered) and on pending_until, the unique index on email.
_STATE_FILTERS = {
    "registered": "NOT is_anonymous",
    "pending": "is_anonymous AND pending_email IS NOT NULL AND pending_until > now()",
    "anonymous": "is_anonymous AND NOT (pending_email IS NOT NULL AND pending_until > now())",
}


def _list_statement(state: str | None, inactive: bool, email: bool, after: bool) -> sa.TextClause:
    where = []
    if state is not None:
        where.append(_STATE_FILTERS[state])
    if inactive:
        stale = "updated_at < now() - make_interval(days => :inactive_days)"
        # Spelled per kind of account when no state narrows it, so the planner can walk the two
        # partial indexes on updated_at (users has none on updated_at alone).
        where.append(
            stale if state else f"((is_anonymous AND {stale}) OR (NOT is_anonymous AND {stale}))"
        )
    if email:
        where.append("email = :email")
    if after:
        where.append("id > :after")
    clause = " AND ".join(where) or "true"
    # Keyset on the UUIDv7 id: new accounts sort last, deletions never shift a page boundary.
    # The page's ids are chosen first, so a filter's index that carries the id (INCLUDE) answers
    # without visiting the rows it does not return; then only the page's rows are read.
    return sa.text(
        f"WITH page AS MATERIALIZED (SELECT id FROM users WHERE {clause} ORDER BY id LIMIT :limit)"
        f" SELECT {USER_COLUMNS} FROM users WHERE id IN (SELECT id FROM page) ORDER BY id"
    )


@router.get(
    "/users",
    summary="List accounts (keyset pagination on the time-ordered id)",
    responses={200: {"model": UserPage}, **responses("invalid_request")},
)
async def list_users(
    conn: AsyncConnection = SingleStatement,
    state: Literal["anonymous", "pending", "registered"] | None = Query(None),
    inactive_days: int | None = Query(
        None, ge=0, le=MAX_OLDER_THAN_DAYS, description="Not touched for at least this many days."
    ),
    email: str | None = Query(None, max_length=320, description="Exact, case-insensitive."),
    limit: int = Query(50, ge=1, le=MAX_PAGE),
    cursor: str | None = Query(None, max_length=64, description="`next_cursor` of the last page."),
) -> Response:
    after = decode_cursor(cursor) if cursor else None
    params: dict[str, Any] = {"limit": limit + 1}
    if inactive_days is not None:
        params["inactive_days"] = inactive_days
    if email is not None:
        params["email"] = email_key(email)  # the stored normal form: exact, case-insensitive
    if after is not None:
        params["after"] = after
    statement = _list_statement(state, inactive_days is not None, email is not None, bool(after))
    rows = list(await conn.execute(statement, params))
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return json_response(
        {"users": [user_view(row) for row in rows[:limit]], "next_cursor": next_cursor}
    )


@router.get(
    "/users/{user_id}",
    summary="One account",
    responses={200: {"model": User}, **responses("not_found")},
)
async def get_account(user_id: str, conn: AsyncConnection = SingleStatement) -> Response:
    row = await get_user(conn, parse_user_id(user_id))
    if row is None:
        raise AnonidError("not_found")
    return json_response(user_view(row))


@router.delete(
    "/users/{user_id}",
    summary="Erase an account (as DELETE /v1/me does); records user.deleted",
    status_code=204,
    responses=responses("not_found"),
)
async def delete_account(
    request: Request, user_id: str, conn: AsyncConnection = Transaction
) -> Response:
    svc = services(request)
    if not await erase_user(conn, parse_user_id(user_id), svc.settings.webhook_url_list):
        raise AnonidError("not_found")
    return empty_response(svc)


@router.post(
    "/cull",
    summary="Cull stale anonymous accounts now (the same as `anonid cull`)",
    responses={
        200: {"model": CullResult},
        **responses(
            "invalid_json", "invalid_request", "unsupported_media_type", "payload_too_large"
        ),
    },
    openapi_extra=body_spec(CullRequest),
)
async def cull(request: Request) -> Response:
    svc = services(request)
    # An empty body means the defaults: cull now with ANONID_CULL_AFTER_DAYS.
    body = await request.body()
    options = _cull_request(await raw_json(request)) if body.strip() else CullRequest()
    # The lock is held on the direct connection when there is one, as the worker's cull does.
    result = await run_cull(
        svc.engine,
        svc.settings,
        dry_run=options.dry_run,
        older_than_days=options.older_than_days,
        lock_engine=svc.direct,
    )
    return json_response(result)


def _cull_request(data: Any) -> CullRequest:
    try:
        return CullRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise AnonidError("invalid_request", f"{where}: {first['msg']}") from None


@router.get(
    "/stats",
    summary="Accounts, the daily funnel, MAU and outbox depth",
    description="`users` and `mau` may lag writes by up to 60 seconds (the worker recounts them).",
    responses={200: {"model": Stats}, **responses("invalid_request")},
)
async def stats(
    conn: AsyncConnection = Transaction,
    days: int = Query(
        DAYS, ge=1, le=MAX_DAYS, description="How many UTC days `daily` lists, today included."
    ),
) -> Response:
    return json_response(await collect_stats(conn, days))
