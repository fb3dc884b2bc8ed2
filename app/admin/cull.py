"""The console's cull: a dry run (how many stale guests, nothing deleted) or a cull now.

The same ``run_cull`` as ``anonid cull`` and ``POST /v1/admin/cull``: batches of its own short
transactions under the advisory lock (held on the direct connection when there is one), walking
the partial index on ``updated_at WHERE is_anonymous``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.admin import session as console
from app.admin.render import csrf_for, page, refused, signed_in, to_sign_in
from app.api.deps import services
from app.api.pages import read_form
from app.lifecycle.cull import MAX_OLDER_THAN_DAYS, MIN_OLDER_THAN_DAYS, run_cull

router = APIRouter()


def _cull_page(
    request: Request,
    session: console.ConsoleSession,
    status: int = 200,
    *,
    older_than_days: int | str,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> Response:
    settings = services(request).settings
    return page(
        request,
        "cull.html",
        status,
        session=session,
        title="Cull",
        error=error,
        older_than_days=older_than_days,
        cull_after_days=settings.cull_after_days,
        interval_minutes=settings.cull_interval_minutes,
        min_days=MIN_OLDER_THAN_DAYS,
        max_days=MAX_OLDER_THAN_DAYS,
        result=result,
    )


@router.get("/admin/cull")
async def cull_form(request: Request) -> Response:
    session = signed_in(request)
    if session is None:
        return to_sign_in()
    return _cull_page(request, session, older_than_days=services(request).settings.cull_after_days)


@router.post("/admin/cull")
async def cull(request: Request) -> Response:
    session = signed_in(request)
    if session is None:
        return to_sign_in()
    form = await read_form(request)
    if not csrf_for(request, session).valid("cull", form.get("csrf", "")):
        return refused(request, session)
    given = form.get("older_than_days", "").strip()
    if not given.isdigit() or not MIN_OLDER_THAN_DAYS <= int(given) <= MAX_OLDER_THAN_DAYS:
        error = f"Days must be a whole number from {MIN_OLDER_THAN_DAYS} to {MAX_OLDER_THAN_DAYS}."
        return _cull_page(request, session, 422, older_than_days=given[:10], error=error)
    svc = services(request)
    result = await run_cull(
        svc.engine,
        svc.settings,
        dry_run=form.get("action") != "run",
        older_than_days=int(given),
        lock_engine=svc.direct,
    )
    return _cull_page(request, session, older_than_days=int(given), result=result)
