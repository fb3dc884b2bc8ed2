"""The console's outbox: how much waits, what was given up on (with its last error), retry."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.admin.render import csrf_for, page, redirect, refused, signed_in, to_sign_in
from app.api.deps import services
from app.api.pages import read_form
from app.errors import AnonidError
from app.lifecycle.stats import outbox_depth
from app.outbox.failures import failed_deliveries, retry_delivery

router = APIRouter()

DONE = {
    "retried": "The delivery is due again: a worker tries it within seconds.",
    "gone": "That row is no longer failed (delivered, retried or removed meanwhile).",
}


@router.get("/admin/outbox")
async def outbox(request: Request) -> Response:
    session = signed_in(request)
    if session is None:
        return to_sign_in()
    cursor = request.query_params.get("cursor") or None
    error = None
    async with services(request).engine.begin() as conn:
        depth = await outbox_depth(conn)
        try:
            failed = await failed_deliveries(conn, cursor[:80] if cursor else None)
        except AnonidError as exc:
            error, failed = exc.message, await failed_deliveries(conn)
    next_url = (
        "/admin/outbox?" + urlencode({"cursor": failed.next_cursor}) if failed.next_cursor else None
    )
    return page(
        request,
        "outbox.html",
        422 if error else 200,
        session=session,
        title="Outbox",
        error=error,
        notice=DONE.get(request.query_params.get("done", "")),
        depth=depth,
        rows=failed.rows,
        next_url=next_url,
        first_url="/admin/outbox" if cursor else None,
    )


@router.post("/admin/outbox/{row_id}/retry")
async def retry(request: Request, row_id: str) -> Response:
    session = signed_in(request)
    if session is None:
        return to_sign_in()
    form = await read_form(request)
    if not csrf_for(request, session).valid(f"retry:{row_id}", form.get("csrf", "")):
        return refused(request, session)
    retried = False
    if row_id.isdigit() and len(row_id) < 19:
        async with services(request).engine.begin() as conn:
            retried = await retry_delivery(conn, int(row_id))
    return redirect(request, f"/admin/outbox?done={'retried' if retried else 'gone'}", session)
