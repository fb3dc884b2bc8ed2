"""Hosted pages for email codes and links (CONTRACT §6, §15), plain HTML forms like the others
(``app.api.pages``: CSRF tokens, languages, brand).

- ``/account/email?token=``: the page every sign-in and address-change link opens (and a setup
  link too). A link never acts on a ``GET``, since mail scanners follow links: the page shows
  one button, and its ``POST`` redeems the link.
- ``/account/login/email`` and ``/account/login/code``: the login form's "Email me a code" button
  (the form's address, posted here instead), then the code typed in.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, Response

from app.api import email_flows
from app.api.deps import Session, lenient_session, services
from app.api.pages import (
    CSRF_MESSAGE,
    TOKEN_PAGE_ERRORS,
    Csrf,
    done_page,
    error_text,
    form_body,
    html_responses,
    login_page,
    read_form,
    render_page,
    token_param,
    translated,
)
from app.credentials.links import Purpose, peek_link_purpose
from app.errors import N_, AnonidError
from app.lifecycle.addresses import parse_email
from app.services import Services

router = APIRouter(prefix="/account", tags=["hosted pages"])

_PURPOSES: tuple[Purpose, ...] = ("setup", "login", "email_change")
_LINKS: dict[str, dict[str, str]] = {
    "setup": {
        "title": N_("Save your account"),
        "intro": N_(
            "Keep your guest account with the address %(email)s: everything you did as a guest "
            "stays, and you sign in with a code sent to that address."
        ),
        "button": N_("Save my account"),
        "done": N_("Your account is saved"),
    },
    "login": {
        "title": N_("Log in"),
        "intro": N_("Log in to the account of %(email)s on this device."),
        "button": N_("Log in"),
        "done": N_("You are logged in"),
    },
    "email_change": {
        "title": N_("Confirm your new address"),
        "intro": N_("Make %(email)s the address of your account."),
        "button": N_("Confirm the address"),
        "done": N_("Your address is changed"),
    },
}
_LINK_FORM = "email_link"
_SENT = N_("If an account has this address, a code and a link to log in are on their way.")


def _link_page(
    request: Request,
    csrf: Csrf,
    purpose: str | None,
    token: str = "",
    status: int = 200,
    *,
    email: str = "",
    error: str | None = None,
) -> Response:
    """The one-button page of a live link, or (``purpose`` None) why a link cannot be used."""
    texts = _LINKS.get(purpose or "")
    if texts is None:
        return render_page(
            request,
            "email_link.html",
            status,
            csrf=csrf,
            title=translated(request, N_("This link cannot be used")),
            form=False,
            error=error,
            retry_url="/account/login",
            form_token="",
        )
    return render_page(
        request,
        "email_link.html",
        status,
        csrf=csrf,
        title=translated(request, texts["title"]),
        intro=translated(request, texts["intro"], {"email": email}),
        button=translated(request, texts["button"]),
        form=True,
        token=token,
        error=error,
        retry_url="",
        form_token=csrf.token(_LINK_FORM),
    )


async def _peek(svc: Services, token: str) -> tuple[Purpose, str]:
    async with svc.single_statement() as conn:
        purpose, target = await peek_link_purpose(conn, token, _PURPOSES)
    return purpose, target.email


@router.get(
    "/email",
    summary="Hosted page: the one button that redeems an emailed link (sign-in, new address, "
    "setup)",
    description="Opening the link changes nothing: mail scanners follow links. The button does.",
    response_class=HTMLResponse,
    responses=html_responses("The page with its one button", **TOKEN_PAGE_ERRORS),
    openapi_extra=token_param(required=True),
)
async def email_link_page(
    request: Request, session: Session | None = Depends(lenient_session)
) -> Response:
    svc = services(request)
    csrf = await Csrf.of(request, svc, session)
    token = request.query_params.get("token", "")
    try:
        purpose, email = await _peek(svc, token)
    except AnonidError as exc:
        return _link_page(request, csrf, None, status=exc.status, error=error_text(request, exc))
    return _link_page(request, csrf, purpose, token, email=email)


@router.post(
    "/email",
    summary="Hosted page: redeem the emailed link; a sign-in or setup link sets the session cookie",
    response_class=HTMLResponse,
    responses=html_responses(
        "Done: signed in, the account saved, or the address changed",
        **TOKEN_PAGE_ERRORS,
        **{
            "403": "Missing or wrong CSRF token (the page again), or a foreign origin (JSON)",
            "409": "The address belongs to another account",
            "429": "Too many attempts",
        },
    ),
    openapi_extra=form_body("token"),
)
async def email_link_submit(
    request: Request, session: Session | None = Depends(lenient_session)
) -> Response:
    svc = services(request)
    csrf = await Csrf.of(request, svc, session)
    form = await read_form(request)
    token = form.get("token") or request.query_params.get("token", "")
    try:
        purpose, email = await _peek(svc, token)
    except AnonidError as exc:
        return _link_page(request, csrf, None, status=exc.status, error=error_text(request, exc))
    if not csrf.valid(_LINK_FORM, form.get("csrf", "")):
        error = translated(request, CSRF_MESSAGE)
        return _link_page(request, csrf, purpose, token, 403, email=email, error=error)
    done = _LINKS[purpose]["done"]
    try:
        if purpose == "setup":
            pair = await email_flows.convert_by_link(request, svc, token)
        elif purpose == "login":
            pair, _ = await email_flows.sign_in_by_link(request, svc, session, token)
        else:
            row = await email_flows.change_email_by_link(request, svc, token)
            message = N_("The address of your account is now %(email)s.")
            return render_page(
                request,
                "done.html",
                csrf=csrf,
                title=translated(request, done),
                message=translated(request, message, {"email": row.email}),
                continue_url=svc.settings.origins[0] + "/",
            )
    except AnonidError as exc:
        return _link_page(request, csrf, None, status=exc.status, error=error_text(request, exc))
    return done_page(request, svc, csrf, pair, done)


def _code_page(
    request: Request, csrf: Csrf, email: str, status: int = 200, **context: Any
) -> Response:
    return render_page(
        request,
        "email_code.html",
        status,
        csrf=csrf,
        title=translated(request, N_("Enter your code")),
        email=email,
        form_token=csrf.token("login_code"),
        **context,
    )


@router.post(
    "/login/email",
    summary='Hosted page: email a sign-in code and link (the login page\'s "Email me a code")',
    description="Answers the same page whether or not the address has an account.",
    response_class=HTMLResponse,
    responses=html_responses(
        "The page to type the code in",
        **{
            "403": "Missing or wrong CSRF token (the login page again), or a foreign origin (JSON)",
            "422": "Not an email address: the login page again, with the reason",
            "429": "Too many requests",
        },
    ),
    openapi_extra=form_body("email"),
)
async def login_email_submit(
    request: Request, session: Session | None = Depends(lenient_session)
) -> Response:
    svc = services(request)
    csrf = await Csrf.of(request, svc, session)
    form = await read_form(request)
    raw = form.get("email", "")
    # The login form's second button: the same form, so the same token.
    if not csrf.valid("login", form.get("csrf", "")):
        error = translated(request, CSRF_MESSAGE)
        return login_page(request, csrf, session, 403, email=raw, error=error)
    try:
        email = parse_email(raw)
        await email_flows.send_login_code(request, svc, email)
    except AnonidError as exc:
        error = error_text(request, exc)
        return login_page(
            request, csrf, session, exc.status, email=raw, error=error, headers=exc.headers
        )
    return _code_page(request, csrf, email, notice=translated(request, _SENT))


@router.post(
    "/login/code",
    summary="Hosted page: log in with the emailed code (a guest session's data comes along)",
    response_class=HTMLResponse,
    responses=html_responses(
        "Logged in; the session cookie is set",
        **{
            "400": "A wrong or spent code: the form again, with the reason",
            "403": "Missing or wrong CSRF token (the form again), or a foreign origin (JSON)",
            "410": "The code has expired: the form again, with the reason",
            "429": "Too many attempts",
        },
    ),
    openapi_extra=form_body("email", "code"),
)
async def login_code_submit(
    request: Request, session: Session | None = Depends(lenient_session)
) -> Response:
    svc = services(request)
    csrf = await Csrf.of(request, svc, session)
    form = await read_form(request)
    email = form.get("email", "")
    if not csrf.valid("login_code", form.get("csrf", "")):
        return _code_page(request, csrf, email, 403, error=translated(request, CSRF_MESSAGE))
    try:
        pair, _ = await email_flows.sign_in_by_code(
            request, svc, session, email, form.get("code", "")
        )
    except AnonidError as exc:
        error = error_text(request, exc)
        return _code_page(request, csrf, email, exc.status, error=error, headers=exc.headers)
    return done_page(request, svc, csrf, pair, N_("You are logged in"))
