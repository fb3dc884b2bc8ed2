"""The console's accounts: every admin filter with keyset pages, one account, delete, end sessions.

The list is ``app.lifecycle.listing.list_users``, the query of ``GET /v1/admin/users`` (each
filter served by an index, CONTRACT §12); one account is its row and its latest events through
``ix_events_user_id``. Deleting is ``erase_user`` (as ``DELETE /v1/admin/users/{id}``); ending
sessions is ``logout_everywhere`` (as ``POST /v1/logout-all``): the session version moves on and
every session row ends, so no token the account holds works any more. The page lists the live
sessions (as ``GET /v1/me/sessions`` does), the provider identities and the passkeys.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from fastapi import APIRouter, Request
from starlette.datastructures import QueryParams
from starlette.responses import Response

from app.admin.render import csrf_for, page, redirect, refused, signed_in, to_sign_in
from app.api.deps import services
from app.api.pages import read_form
from app.credentials.identities import identities_of
from app.credentials.passkey_store import list_passkeys
from app.credentials.passwords import logout_everywhere
from app.errors import AnonidError
from app.lifecycle import listing
from app.lifecycle.cull import MAX_OLDER_THAN_DAYS
from app.lifecycle.privacy import erase_user
from app.lifecycle.users import get_user, state_of, user_view
from app.sessions.store import list_sessions

router = APIRouter()

PAGE_SIZES = (25, 50, 100, 200)
EVENTS_SHOWN = 50
DONE = {
    "deleted": "The account was deleted; its events are kept, anonymised.",
    "sessions_ended": "Every session of this account has ended: its tokens are refused from now on.",
}


def _filters(query: QueryParams) -> tuple[dict[str, Any], str | None]:
    """The list's filters from the query string, and what is wrong with them, if anything."""
    state = query.get("state") or None
    inactive = (query.get("inactive_days") or "").strip()
    email = (query.get("email") or "").strip()
    size = query.get("limit") or ""
    filters: dict[str, Any] = {
        "state": state,
        "inactive_days": int(inactive) if inactive.isdigit() else None,
        "email": email or None,
        "cursor": query.get("cursor") or None,
        "limit": int(size) if size.isdigit() and int(size) in PAGE_SIZES else 50,
    }
    if state is not None and state not in listing.STATES:
        return filters, "Choose a state from the list."
    if inactive and (not inactive.isdigit() or int(inactive) > MAX_OLDER_THAN_DAYS):
        return filters, f"Inactive days must be a whole number from 0 to {MAX_OLDER_THAN_DAYS}."
    if len(email) > 320 or len(filters["cursor"] or "") > 64:
        return filters, "That search is too long."
    return filters, None


def _query(filters: dict[str, Any], **changes: Any) -> str:
    values = {**filters, **changes}
    return urlencode({k: v for k, v in values.items() if v not in (None, "")})


def _account_id(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None


@router.get("/admin/users")
async def users(request: Request) -> Response:
    session = signed_in(request)
    if session is None:
        return to_sign_in()
    filters, error = _filters(request.query_params)
    found = _account_id(filters["email"] or "")
    if error is None and found is not None:  # an id in the search box opens that account
        return redirect(request, f"/admin/users/{found}", session)
    rows: list[dict[str, Any]] = []
    next_url = None
    if error is None:
        try:
            async with services(request).single_statement() as conn:
                result = await listing.list_users(conn, **filters)
        except AnonidError as exc:  # a cursor not made here
            error = exc.message
        else:
            rows = [user_view(row) for row in result.rows]
            if result.next_cursor:
                next_url = "/admin/users?" + _query(filters, cursor=result.next_cursor)
    return page(
        request,
        "users.html",
        422 if error else 200,
        session=session,
        title="Users",
        error=error,
        notice=DONE.get(request.query_params.get("done", "")),
        users=rows,
        filters=filters,
        states=listing.STATES,
        page_sizes=PAGE_SIZES,
        max_inactive=MAX_OLDER_THAN_DAYS,
        next_url=next_url,
        first_url="/admin/users?" + _query(filters, cursor=None) if filters["cursor"] else None,
    )


async def _user_page(
    request: Request, user_id: str, status: int = 200, error: str | None = None
) -> Response:
    session = signed_in(request)
    if session is None:
        return to_sign_in()
    account_id = _account_id(user_id)
    settings = services(request).settings
    async with services(request).engine.begin() as conn:
        row = await get_user(conn, account_id) if account_id else None
        events = await listing.user_events(conn, row.id, EVENTS_SHOWN) if row else []
        sessions = await list_sessions(conn, settings, row.id, NO_SESSION) if row else []
        identities = await identities_of(conn, row.id) if row else []
        passkeys = await list_passkeys(conn, row.id, row.session_version) if row else []
    if row is None:
        return page(
            request,
            "message.html",
            404,
            session=session,
            title="No such account",
            error="No account has this id: it may have been deleted or culled.",
        )
    return page(
        request,
        "user.html",
        status,
        session=session,
        title="Account",
        error=error,
        notice=DONE.get(request.query_params.get("done", "")),
        user=user_view(row),
        state=state_of(row),
        converted_at=row.converted_at,
        pending_until=row.pending_until if state_of(row) == "pending" else None,
        session_version=row.session_version,
        sessions=sessions,
        identities=identities,
        passkeys=passkeys,
        data=json.dumps(row.data, indent=2, ensure_ascii=False, sort_keys=True),
        events=[
            {
                "type": e.type,
                "created_at": e.created_at,
                "payload": json.dumps(e.payload, ensure_ascii=False, sort_keys=True),
            }
            for e in events
        ],
        events_shown=EVENTS_SHOWN,
    )


@router.get("/admin/users/{user_id}")
async def user(request: Request, user_id: str) -> Response:
    return await _user_page(request, user_id)


# No session of the console's is ever one of the account's: none is marked current.
NO_SESSION = UUID(int=0)


@router.post("/admin/users/{user_id}/end-sessions")
async def end_sessions(request: Request, user_id: str) -> Response:
    session = signed_in(request)
    if session is None:
        return to_sign_in()
    form = await read_form(request)
    if not csrf_for(request, session).valid(f"end-sessions:{user_id}", form.get("csrf", "")):
        return refused(request, session)
    account_id = _account_id(user_id)
    error = None
    async with services(request).engine.begin() as conn:
        row = await get_user(conn, account_id) if account_id else None
        if row is not None and row.is_anonymous:
            error = "A guest has only the session of its one device: delete the guest instead."
        elif row is not None:
            try:
                await logout_everywhere(conn, row.id, row.session_version)
            except AnonidError:  # its sessions moved on meanwhile (a sign-in, a password change)
                error = "The account changed meanwhile; nothing was done. Try again."
    if row is None or error is not None:
        return await _user_page(request, user_id, 409, error)
    return redirect(request, f"/admin/users/{row.id}?done=sessions_ended", session)


@router.post("/admin/users/{user_id}/delete")
async def delete(request: Request, user_id: str) -> Response:
    session = signed_in(request)
    if session is None:
        return to_sign_in()
    form = await read_form(request)
    if not csrf_for(request, session).valid(f"delete:{user_id}", form.get("csrf", "")):
        return refused(request, session)
    if form.get("confirm") != "yes":
        error = "Tick the box to confirm: deleting an account cannot be undone."
        return await _user_page(request, user_id, 422, error)
    account_id = _account_id(user_id)
    svc = services(request)
    async with svc.engine.begin() as conn:
        erased = account_id is not None and await erase_user(
            conn, account_id, svc.settings.webhook_url_list
        )
    if not erased:
        return await _user_page(request, user_id)
    return redirect(request, "/admin/users?done=deleted", session)
