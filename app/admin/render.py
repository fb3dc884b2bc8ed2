"""Rendering a console page, and what every console request checks first.

Every page is HTML without a script (charts are SVG drawn on the server), so the console works
with JavaScript off; it sends the hosted pages' Content-Security-Policy (no script at all) and is
never cached or framed. Every form carries a token of the hosted pages' kind
(``app.api.pages.Csrf``: HMAC under the server's ``csrf`` secret) bound to the console session,
and the request guard refuses a cross-site post before it gets here. The console speaks English.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.admin import session as console
from app.api.deps import services
from app.api.pages import Csrf, content_security_policy
from app.platform.templating import render

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}
CSRF_MESSAGE = "This form has expired or did not come from this console. Please try again."


def signed_in(request: Request) -> console.ConsoleSession | None:
    svc = services(request)
    return console.read(svc, request.cookies.get(console.cookie_name(svc)))


def csrf_for(request: Request, session: console.ConsoleSession | None) -> Csrf:
    """The form tokens of this browser for this console session (or for the sign-in form)."""
    subject = f"console:{session.sid}" if session else "console:none"
    return Csrf(request, services(request), subject, insecure_path=console.PATH)


def to_sign_in() -> Response:
    return RedirectResponse("/admin/signin", status_code=303, headers=HEADERS)


def page(
    request: Request,
    template: str,
    status: int = 200,
    *,
    session: console.ConsoleSession | None,
    csrf: Csrf | None = None,
    set_cookie: str | None = None,
    **context: Any,
) -> Response:
    """``admin/{template}`` with the brand, the session's form tokens (``token(form)``) and the
    session cookie renewed."""
    svc = services(request)
    csrf = csrf or csrf_for(request, session)
    values = {
        "error": None,
        "notice": None,
        "signed_in": session is not None,
        "token": csrf.token,
        "path": request.url.path,
        **context,
    }
    body = render(svc.settings, f"admin/{template}", "en", values)
    headers = {**HEADERS, "Content-Security-Policy": content_security_policy(svc.settings)}
    response = HTMLResponse(body, status_code=status, headers=headers)
    if csrf.fresh:
        response.headers.append("set-cookie", csrf.cookie())
    if set_cookie:
        response.headers.append("set-cookie", set_cookie)
    elif session is not None:
        response.headers.append("set-cookie", console.set_cookie(svc, console.renewed(session)))
    return response


def refused(request: Request, session: console.ConsoleSession) -> Response:
    """A form without its token (or with another form's): nothing was done."""
    return page(request, "message.html", 403, session=session, title="Refused", error=CSRF_MESSAGE)


def redirect(request: Request, url: str, session: console.ConsoleSession) -> Response:
    """303 to ``url`` (after a form), renewing the session."""
    response = RedirectResponse(url, status_code=303, headers=HEADERS)
    svc = services(request)
    response.headers.append("set-cookie", console.set_cookie(svc, console.renewed(session)))
    return response
