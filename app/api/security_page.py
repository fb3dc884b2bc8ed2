"""The hosted security page (CONTRACT §15): the signed-in account's sessions (end another),
passkeys (add, rename, remove) and provider identities, as plain forms with CSRF tokens like the
other hosted pages.

Adding a passkey needs JavaScript (WebAuthn has no form of its own); the lists, renaming,
removing and ending work without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, Response

from app.api import passkey_flows
from app.api.deps import Session, lenient_session, services
from app.api.pages import (
    CSRF_MESSAGE,
    Csrf,
    error_text,
    form_body,
    html_responses,
    read_form,
    render_page,
    translated,
)
from app.api.responses import session_body
from app.credentials import passkey_store
from app.credentials.identities import list_identities
from app.errors import N_, AnonidError
from app.lifecycle.users import get_user
from app.services import Services
from app.sessions.store import end_session, list_sessions

router = APIRouter(prefix="/account", tags=["hosted pages"])

FORM = "security"
NOTICES = {
    "add": N_("Your passkey is saved."),
    "rename": N_("The passkey is renamed."),
    "remove": N_("The passkey is removed."),
    "end_session": N_("That session is ended."),
}


@dataclass(frozen=True, slots=True)
class Viewer:
    """Whose page it is: the account at its session version, and the session looking."""

    user_id: UUID
    session_version: int
    sid: UUID


def _day(value: Any) -> str | None:
    return value[:10] if value else None


async def _security_page(
    request: Request,
    svc: Services,
    csrf: Csrf,
    viewer: Viewer | None,
    status: int = 200,
    *,
    cookies: list[str] | None = None,
    error: str | None = None,
    notice: str | None = None,
) -> Response:
    """The page of ``viewer``'s account; without one, a way to log in."""
    context: dict[str, Any] = {"signed_in": False}
    if viewer is not None:
        account = (viewer.user_id, viewer.session_version)
        async with svc.single_statement() as conn:
            user = await get_user(conn, viewer.user_id)
            if user is not None and user.session_version == viewer.session_version:
                found = await passkey_store.list_passkeys(conn, *account)
                identities = await list_identities(conn, *account)
                sessions = await list_sessions(conn, svc.settings, viewer.user_id, viewer.sid)
                context = {
                    "signed_in": True,
                    "guest": user.is_anonymous,
                    "email": user.email,
                    "passkeys": [
                        {
                            **p,
                            "created": _day(p["created_at"]),
                            "last_used": _day(p["last_used_at"]),
                        }
                        for p in found
                    ],
                    "identities": identities,
                    "sessions": [{**s, "last_used": _day(s["last_used_at"])} for s in sessions],
                }
    offered = context["signed_in"] and svc.settings.passkeys_offered
    return render_page(
        request,
        "security.html",
        status,
        csrf=csrf,
        set_cookies=cookies,
        scripts=offered,
        title=translated(request, N_("Security")),
        form_token=csrf.token(FORM),
        passkey_offered=offered,
        error=error,
        notice=notice,
        **context,
    )


def _viewer(session: Session | None) -> Viewer | None:
    if session is None:
        return None
    return Viewer(session.claims.sub, session.claims.sv, session.claims.sid)


@router.get(
    "/security",
    summary="Hosted page: the signed-in account's sessions, passkeys and provider identities",
    response_class=HTMLResponse,
    responses=html_responses("The lists and forms, or a link to log in without a session"),
)
async def security_page(
    request: Request, session: Session | None = Depends(lenient_session)
) -> Response:
    svc = services(request)
    return await _security_page(request, svc, await Csrf.of(request, svc), _viewer(session))


async def _act(
    request: Request, svc: Services, session: Session, form: dict[str, str]
) -> tuple[Viewer, list[str]]:
    """Carry out the form's action; whose page to show afterwards and the new session's
    cookies (a passkey added renews the session; a guest's becomes a registered one's)."""
    action = form.get("action", "")
    viewer = _viewer(session)
    assert viewer is not None
    account = (viewer.user_id, viewer.session_version)
    if action == "add":
        pair = await passkey_flows.add_passkey(
            request, svc, session, form.get("passkey", ""), form.get("name") or None
        )
        _, cookies = session_body(svc, pair, bearer=False)
        return Viewer(pair.user.id, pair.user.session_version, pair.sid), cookies
    if action == "end_session":
        try:
            sid = UUID(form.get("session_id", ""))
        except ValueError:
            raise AnonidError("not_found") from None
        # This browser's own session ends with "Log out"; here, the others.
        ended = sid != viewer.sid and await end_session(
            svc.pool, svc.settings, viewer.user_id, sid, "ended_by_user"
        )
        if not ended:
            raise AnonidError("not_found")
        return viewer, []
    try:
        passkey_id = UUID(form.get("passkey_id", ""))
    except ValueError:
        raise AnonidError("not_found") from None
    if action == "rename":
        name = passkey_store.clean_name(form.get("name", ""))
        async with svc.single_statement() as conn:
            await passkey_store.rename_passkey(conn, *account, passkey_id, name)
    elif action == "remove":
        async with svc.engine.begin() as conn:
            await passkey_store.remove_passkey(conn, *account, passkey_id)
    else:
        raise AnonidError("invalid_request")
    return viewer, []


@router.post(
    "/security",
    summary="Hosted page: add, rename or remove a passkey, or end another session (`action` = "
    "add, rename, remove or end_session)",
    response_class=HTMLResponse,
    responses=html_responses(
        "Done: the page again, with what changed (a passkey added sets the session cookie)",
        **{
            "400": "The passkey could not be verified",
            "401": "No session: the page with a link to log in",
            "403": "Missing or wrong CSRF token (the page again), or a foreign origin (JSON)",
            "404": "Not one of this account's passkeys or other live sessions",
            "409": "The account's last way to sign in",
            "422": "A name that is empty or too long",
            "429": "Too many attempts",
        },
    ),
    openapi_extra=form_body("action"),
)
async def security_submit(
    request: Request, session: Session | None = Depends(lenient_session)
) -> Response:
    svc = services(request)
    csrf = await Csrf.of(request, svc)
    form = await read_form(request)
    if session is None:  # nothing to act on
        return await _security_page(request, svc, csrf, None, 401)
    viewer = _viewer(session)
    if not csrf.valid(FORM, form.get("csrf", "")):
        error = translated(request, CSRF_MESSAGE)
        return await _security_page(request, svc, csrf, viewer, 403, error=error)
    try:
        viewer, cookies = await _act(request, svc, session, form)
    except AnonidError as exc:
        error = error_text(request, exc)
        return await _security_page(request, svc, csrf, viewer, exc.status, error=error)
    notice = translated(request, NOTICES[form["action"]])
    return await _security_page(request, svc, csrf, viewer, cookies=cookies, notice=notice)
