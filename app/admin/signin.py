"""Signing in to the console with the admin key, and signing out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.admin import session as console
from app.admin.render import CSRF_MESSAGE, csrf_for, page, refused, signed_in, to_sign_in
from app.admin.render import redirect as redirect_signed_in
from app.api.deps import services
from app.api.pages import read_form
from app.errors import AnonidError

router = APIRouter()

WRONG_KEY = "That is not the admin key."


def _sign_in_page(request: Request, status: int = 200, error: str | None = None) -> Response:
    configured = services(request).settings.admin_api_key is not None
    return page(
        request,
        "signin.html",
        status,
        session=None,
        title="Sign in",
        configured=configured,
        error=error,
    )


@router.get("/admin/signin")
async def sign_in_form(request: Request) -> Response:
    session = signed_in(request)
    if session is not None:
        return redirect_signed_in(request, "/admin", session)
    return _sign_in_page(request)


@router.post("/admin/signin")
async def sign_in(request: Request) -> Response:
    svc = services(request)
    form = await read_form(request)
    if not csrf_for(request, None).valid("signin", form.get("csrf", "")):
        return _sign_in_page(request, 403, CSRF_MESSAGE)
    try:
        await svc.extras["limiter"].hit_console_sign_in(request)
    except AnonidError as exc:
        response = _sign_in_page(request, exc.status, "Too many attempts; try again later.")
        response.headers.update(exc.headers)
        return response
    if not console.admin_key_matches(svc, form.get("key", "")):
        return _sign_in_page(request, 401, WRONG_KEY)
    return redirect_signed_in(request, "/admin", console.start(svc))


@router.post("/admin/signout")
async def sign_out(request: Request) -> Response:
    svc = services(request)
    session = signed_in(request)
    form = await read_form(request)
    if session is None:
        return to_sign_in()
    if not csrf_for(request, session).valid("signout", form.get("csrf", "")):
        return refused(request, session)
    response = to_sign_in()
    response.headers.append("set-cookie", console.clear_cookie(svc))
    return response
