"""Hosted pages (CONTRACT §5): set up, reset and log in with plain HTML forms, no JavaScript.

Each form carries its own CSRF token: HMAC-SHA256 keyed by the server's ``csrf`` secret
(``app.server_secrets``, shared by every process) over the form's name, a random per-browser
secret held in an HttpOnly, SameSite=Strict cookie, and the subject of the browser's session
("none" without one). So a token for one form is useless on another, a token made for one session
is refused with another, and whoever can plant or read the browser secret (a sibling subdomain
can set cookies for the site) still cannot compute a token without the server secret. With
``ANONID_COOKIE_SECURE`` the cookie is ``__Host-`` prefixed (Secure, ``Path=/``, no ``Domain``),
which browsers let no sibling subdomain set. The request guard refuses every cross-site post to
these forms before they run (``app.platform.middleware``). Every page sends
``Referrer-Policy: no-referrer`` (two of them carry a token in the URL) and is never cached.

Every page speaks the visitor's language (``?lang=``, else ``Accept-Language``, else
``ANONID_DEFAULT_LOCALE``; ``app.platform.i18n``), error sentences included, and carries the
brand (``app.platform.templating``); a form posts back with the ``?lang=`` its page was shown
with, so what the post causes (an email) speaks that language too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, Response

from app.api import passkey_flows
from app.api.credential_flows import limit_credentials, login_and_merge, redeem_with_password
from app.api.deps import Session, lenient_session, services, user_agent
from app.api.email_flows import convert_by_link
from app.api.errors import responses
from app.credentials import passwords
from app.credentials.links import Purpose, peek_link_token
from app.errors import N_, AnonidError
from app.platform.i18n import LANGUAGES, NAMES, gettext_for, language_of_scope
from app.platform.request_auth import bearer_token
from app.platform.templating import brand_of, render
from app.services import Services
from app.sessions.store import Pair
from app.settings import Settings

log = logging.getLogger("anonid.pages")

router = APIRouter(prefix="/account", tags=["hosted pages"])

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}
CSRF_SECRET_BYTES = 32
MAX_FIELD = 4096
# A passkey's answer (JSON) may be longer than a typed field.
LONG_FIELDS = {"passkey": 65536}
CSRF_MESSAGE = N_("This form has expired or did not come from this site. Please try again.")

HTML = {"content": {"text/html": {"schema": {"type": "string"}}}}
_GUARD_REFUSAL = responses("csrf_rejected")[403]


def form_body(*fields: str, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {f: {"type": "string"} for f in ("csrf", *fields, *optional)},
        "required": ["csrf", *fields],
    }
    return {
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": schema}},
        }
    }


def token_param(required: bool) -> dict[str, Any]:
    return {
        "parameters": [
            {"name": "token", "in": "query", "required": required, "schema": {"type": "string"}}
        ]
    }


def html_responses(description: str, **errors: str) -> dict[int | str, dict[str, Any]]:
    documented: dict[int | str, dict[str, Any]] = {200: {"description": description, **HTML}}
    for status, text in errors.items():
        documented[int(status)] = {"description": text, **HTML}
    if 403 in documented:
        # A post from another site never reaches the form: the request guard answers it in JSON.
        documented[403] = {
            "description": documented[403]["description"],
            "content": {**HTML["content"], **_GUARD_REFUSAL["content"]},
        }
    return documented


def content_security_policy(
    settings: Settings, *, scripts: bool = False, guest_script: bool = False
) -> str:
    """The pages' CSP: no script at all, inline styles, images only from the brand's logo. Pages
    offering passkeys (``scripts``) run ``/account/assets/passkeys.js`` and fetch from anonid; a
    page that creates a guest (``guest_script``) runs ``/account/assets/anonid-guest.js`` and the
    vendored ALTCHA widget: scripts, workers and fetches stay ``'self'``, nothing is inline."""
    # img-src data: for the page's empty icon (else browsers fetch /favicon.ico).
    images = " ".join(filter(None, ("data:", brand_of(settings).logo_origin)))
    if guest_script:
        own = (
            "script-src 'self'; worker-src 'self'; connect-src 'self'; "
            "style-src 'self' 'unsafe-inline'; "
        )
    elif scripts:
        own = "script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
    else:
        own = "style-src 'unsafe-inline'; "
    return (
        f"default-src 'none'; {own}img-src {images}; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


class Csrf:
    """The per-browser secret (its cookie) and the per-form tokens bound to it, to the session
    and to the server's ``csrf`` secret; build it with ``await Csrf.of(request, svc)``.

    ``insecure_path``: the cookie's path without ``ANONID_COOKIE_SECURE`` (with it the cookie is
    ``__Host-``, so ``Path=/``); the console (``app.admin``) keeps its own under ``/admin``."""

    def __init__(
        self, request: Request, svc: Services, subject: str, insecure_path: str = "/account"
    ) -> None:
        self.secure = svc.settings.cookie_secure
        self.insecure_path = insecure_path
        # __Host- needs Secure, so plain-http local use keeps the plain name (and its old path).
        prefix = "__Host-" if self.secure else ""
        self.cookie_name = f"{prefix}{svc.cookies.name}_csrf"
        self._key = svc.server_secrets["csrf"]
        self._subject = subject
        current = request.cookies.get(self.cookie_name, "")
        self.fresh = not _well_formed(current)
        self.secret = secrets.token_urlsafe(CSRF_SECRET_BYTES) if self.fresh else current

    @classmethod
    async def of(cls, request: Request, svc: Services, session: Session | None = None) -> Csrf:
        """For a form whose handler sees ``session`` (a page with a session dependency), else
        for the session the cookie names."""
        if session is not None:
            return cls(request, svc, str(session.claims.sub))
        return cls(request, svc, await _session_subject(request, svc))

    def token(self, form: str) -> str:
        # NUL never occurs in a form name, a well-formed secret or a subject: fields cannot run
        # into each other.
        message = "\0".join(("anonid-form", form, self.secret, self._subject)).encode()
        mac = hmac.new(self._key, message, hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()

    def valid(self, form: str, submitted: str) -> bool:
        return not self.fresh and hmac.compare_digest(self.token(form), submitted)

    def cookie(self) -> str:
        path = "/" if self.secure else self.insecure_path
        attrs = f"Path={path}; HttpOnly; SameSite=Strict" + ("; Secure" if self.secure else "")
        return f"{self.cookie_name}={self.secret}; {attrs}"


async def _session_subject(request: Request, svc: Services) -> str:
    """The user id the access token names (expired or not: a renewal keeps the user), or
    ``"none"``."""
    authorization = request.headers.get("authorization")
    if authorization is not None:
        token = bearer_token(authorization)
    else:
        token = request.cookies.get(svc.cookies.name) or None
    if token is None:
        return "none"
    try:
        return str((await svc.access.verify_ignoring_expiry(token)).sub)
    except AnonidError:
        return "none"


def _well_formed(value: str) -> bool:
    return 40 <= len(value) <= 64 and all(c.isalnum() or c in "-_" for c in value)


def page_language(request: Request) -> str:
    return language_of_scope(request.scope, services(request).settings.default_locale)


def translated(request: Request, message: str, params: dict[str, Any] | None = None) -> str:
    """``message`` (an English sentence of the catalogs) in the page's language."""
    text = gettext_for(page_language(request))(message)
    return text % params if params else text


def error_text(request: Request, exc: AnonidError) -> str:
    """A domain error's sentence in the page's language (the API keeps it in English)."""
    return translated(request, exc.template, exc.params)


def _with_lang(url: str, lang: str | None) -> str:
    if lang is None:
        return url
    return url + ("&" if "?" in url else "?") + urlencode({"lang": lang})


def render_page(
    request: Request,
    template: str,
    status: int = 200,
    *,
    csrf: Csrf,
    set_cookies: list[str] | None = None,
    headers: dict[str, str] | None = None,
    scripts: bool = False,
    **context: Any,
) -> Response:
    settings = services(request).settings
    lang = page_language(request)
    asked = request.query_params.get("lang")
    # The same page in each language (the query kept, a token included: no-referrer guards it).
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    languages = [
        (code, NAMES[code], "?" + urlencode([*query, ("lang", code)])) for code in LANGUAGES
    ]
    values = {
        "error": None,
        "notice": None,
        "languages": languages,
        "with_lang": lambda url: _with_lang(url, lang if asked else None),
        **context,
    }
    body = render(settings, f"pages/{template}", lang, values)
    page_headers = {
        **PAGE_HEADERS,
        "Content-Security-Policy": content_security_policy(settings, scripts=scripts),
        "Content-Language": lang,
    }
    response = HTMLResponse(body, status_code=status, headers={**page_headers, **(headers or {})})
    if csrf.fresh:
        response.headers.append("set-cookie", csrf.cookie())
    for cookie in set_cookies or ():
        response.headers.append("set-cookie", cookie)
    return response


async def read_form(request: Request) -> dict[str, str]:
    """The posted fields as strings; anything unparseable is an empty form (refused by CSRF)."""
    try:
        form = await request.form(max_files=0, max_fields=16)
    except Exception as exc:  # malformed bodies are the client's problem, never a 5xx
        log.info("unreadable form: %s", type(exc).__name__)
        return {}
    return {k: v[: LONG_FIELDS.get(k, MAX_FIELD)] for k, v in form.items() if isinstance(v, str)}


def done_page(request: Request, svc: Services, csrf: Csrf, pair: Pair, title: str) -> Response:
    email = pair.user.email
    if email is None:  # an account made with a passkey or a provider that gave no address
        message = translated(request, N_("You are logged in."))
    else:
        message = translated(request, N_("You are logged in as %(email)s."), {"email": email})
    return render_page(
        request,
        "done.html",
        csrf=csrf,
        set_cookies=svc.cookies.set(pair.access.token, pair.refresh_token, pair.max_age),
        title=translated(request, title),
        message=message,
        # Back to the app the visitor came from (the first allowed origin); anonid has no home.
        continue_url=svc.settings.origins[0] + "/",
    )


# Log in


# What a provider sign-in that ended here (``/account/login?error=<code>``) says to the visitor.
FLOW_MESSAGES = {
    "access_denied": N_("Signing in with the provider was cancelled."),
    "invalid_state": N_("That sign-in link has expired or was already used. Please try again."),
    "invalid_id_token": N_("The provider's answer could not be verified. Please try again."),
    "provider_error": N_("The provider could not complete the sign-in. Please try again later."),
    "identity_taken": N_("That provider account is already linked to another account."),
    "email_taken": N_("That address already belongs to another account."),
}


def _provider_buttons(svc: Services) -> list[dict[str, str]]:
    """One "Continue with …" link per configured provider (CONTRACT §15)."""
    return [
        {"name": name, "label": config.label, "url": f"/v1/oauth/{name}/authorize"}
        for name, config in svc.settings.oidc_provider_map.items()
    ]


def login_page(
    request: Request, csrf: Csrf, session: Session | None, status: int = 200, **context: Any
) -> Response:
    context.setdefault("email", "")
    if context.get("error") is None:
        message = FLOW_MESSAGES.get(request.query_params.get("error", ""))
        context["error"] = translated(request, message) if message else None
    guest = session is not None and session.claims.anon
    offered = services(request).settings.passkeys_offered
    return render_page(
        request,
        "login.html",
        status,
        csrf=csrf,
        scripts=offered,
        title=translated(request, N_("Log in")),
        guest=guest,
        form_token=csrf.token("login"),
        providers=_provider_buttons(services(request)),
        passkey=offered,
        **context,
    )


@router.get(
    "/login",
    summary="Hosted page: the login form",
    response_class=HTMLResponse,
    responses=html_responses("The form"),
)
async def login_form(
    request: Request, session: Session | None = Depends(lenient_session)
) -> Response:
    return login_page(request, await Csrf.of(request, services(request), session), session)


@router.post(
    "/login",
    summary="Hosted page: log in (a guest session's data comes along)",
    response_class=HTMLResponse,
    responses=html_responses(
        "Logged in; the session cookie is set",
        **{
            "401": "Wrong address or password: the form again, with the reason",
            "403": "Missing or wrong CSRF token (the form again), or a foreign origin (JSON)",
            "429": "Too many attempts",
        },
    ),
    openapi_extra=form_body("email", "password"),
)
async def login_submit(
    request: Request, session: Session | None = Depends(lenient_session)
) -> Response:
    svc = services(request)
    csrf = await Csrf.of(request, svc, session)
    form = await read_form(request)
    email = form.get("email", "")
    if not csrf.valid("login", form.get("csrf", "")):
        error = translated(request, CSRF_MESSAGE)
        return login_page(request, csrf, session, 403, email=email, error=error)
    try:
        if "passkey" in form:  # "Sign in with a passkey": the assertion, as JSON
            pair, _ = await passkey_flows.sign_in(request, svc, session, form["passkey"])
        else:
            await limit_credentials(request, svc, email)
            pair, _ = await login_and_merge(
                svc, session, email, form.get("password", ""), user_agent(request)
            )
    except AnonidError as exc:
        error = error_text(request, exc)
        return login_page(
            request, csrf, session, exc.status, email=email, error=error, headers=exc.headers
        )
    return done_page(request, svc, csrf, pair, N_("You are logged in"))


# Choose a password: setup (finishing a conversion) and reset


_FLOWS: dict[Purpose, dict[str, str]] = {
    "setup": {
        "title": N_("Choose your password"),
        "intro": N_("Choose a password to keep your account. Everything you did as a guest stays."),
        "button": N_("Save my account"),
        "action": "/account/setup",
        "retry": "",
        "done": N_("Your account is saved"),
    },
    "reset": {
        "title": N_("Choose a new password"),
        "intro": N_(
            "Choose a new password. Every other session of your account will be signed out."
        ),
        "button": N_("Set the new password"),
        "action": "/account/reset",
        "retry": "/account/reset",
        "done": N_("Your password is changed"),
    },
}


def _password_page(
    request: Request,
    svc: Services,
    csrf: Csrf,
    purpose: Purpose,
    token: str,
    status: int = 200,
    *,
    form: bool = True,
    email: str = "",
    error: str | None = None,
    passkey: bool = False,
) -> Response:
    flow = _FLOWS[purpose]
    return render_page(
        request,
        "choose_password.html",
        status,
        csrf=csrf,
        scripts=passkey,
        passkey=passkey,
        title=translated(request, flow["title"]),
        intro=translated(request, flow["intro"]),
        button=translated(request, flow["button"]),
        action=flow["action"],
        retry_url=flow["retry"] if not form else "",
        form=form,
        # Setup only: the one button that finishes the conversion with no password.
        without_password=purpose == "setup",
        token=token,
        email=email,
        min_length=svc.settings.password_min_length,
        error=error,
        form_token=csrf.token(purpose),
    )


def _passkey_offered(svc: Services, purpose: Purpose, subject: str, user_id: Any) -> bool:
    """Whether the setup page offers "Save with a passkey": when this browser holds the link's
    guest (the passkey is added with that session) and browsers can use passkeys here."""
    return purpose == "setup" and svc.settings.passkeys_offered and subject == str(user_id)


async def _password_form(request: Request, purpose: Purpose, token: str) -> Response:
    svc = services(request)
    subject = await _session_subject(request, svc)
    csrf = Csrf(request, svc, subject)
    try:
        async with svc.single_statement() as conn:
            target = await peek_link_token(conn, token, purpose)
    except AnonidError as exc:
        return _password_page(
            request, svc, csrf, purpose, "", exc.status, form=False, error=error_text(request, exc)
        )
    passkey = _passkey_offered(svc, purpose, subject, target.user_id)
    return _password_page(request, svc, csrf, purpose, token, email=target.email, passkey=passkey)


async def _passkey_setup(request: Request, svc: Services, token: str, credential: str) -> Pair:
    """The setup page's "Save with a passkey": the passkey and the link's address, at once."""
    session = await lenient_session(request)
    if session is None:
        raise AnonidError("invalid_session")
    return await passkey_flows.add_passkey(
        request, svc, session, credential, None, setup_token=token
    )


async def _password_submit(request: Request, purpose: Purpose) -> Response:
    svc = services(request)
    csrf = await Csrf.of(request, svc)
    form = await read_form(request)
    token = form.get("token") or request.query_params.get("token", "")
    if not csrf.valid(purpose, form.get("csrf", "")):
        error = translated(request, CSRF_MESSAGE)
        return _password_page(request, svc, csrf, purpose, token, 403, error=error)
    if purpose == "setup" and form.get("without_password"):
        return await _save_without_password(request, svc, csrf, token)
    # "Save with a passkey" posts the browser's answer instead of a password.
    passkey = form.get("passkey") if purpose == "setup" else None
    password = form.get("password", "")
    if passkey is None and password != form.get("password_again", password):
        error = translated(request, N_("The two passwords are not the same."))
        return _password_page(request, svc, csrf, purpose, token, 422, error=error)
    try:
        if passkey is not None:
            pair = await _passkey_setup(request, svc, token, passkey)
        else:
            pair = await redeem_with_password(svc, purpose, token, password, user_agent(request))
    except AnonidError as exc:
        # A refused password or passkey may be tried again with the same link; a dead link
        # cannot.
        retry = exc.code in ("weak_password", "invalid_passkey", "rate_limited")
        return _password_page(
            request,
            svc,
            csrf,
            purpose,
            token if retry else "",
            exc.status,
            form=retry,
            error=error_text(request, exc),
            passkey=retry and passkey is not None,
        )
    return done_page(request, svc, csrf, pair, _FLOWS[purpose]["done"])


async def _save_without_password(
    request: Request, svc: Services, csrf: Csrf, token: str
) -> Response:
    """ "Save without a password": the setup link finishes the conversion by itself
    (``email_link``); the account signs in later with a code or link by email."""
    try:
        pair = await convert_by_link(request, svc, token)
    except AnonidError as exc:
        return _password_page(
            request, svc, csrf, "setup", "", exc.status, form=False, error=error_text(request, exc)
        )
    return done_page(request, svc, csrf, pair, _FLOWS["setup"]["done"])


TOKEN_PAGE_ERRORS = {
    "400": "The link is unknown, used or cancelled",
    "410": "The link has expired",
}


@router.get(
    "/setup",
    summary="Hosted page: choose a password to finish a conversion (the link in the email)",
    response_class=HTMLResponse,
    responses=html_responses("The form", **TOKEN_PAGE_ERRORS),
    openapi_extra=token_param(required=True),
)
async def setup_form(request: Request) -> Response:
    return await _password_form(request, "setup", request.query_params.get("token", ""))


@router.post(
    "/setup",
    summary="Hosted page: finish the conversion (with a password, or `without_password`); the "
    "session cookie is set",
    response_class=HTMLResponse,
    responses=html_responses(
        "The account is registered and logged in",
        **TOKEN_PAGE_ERRORS,
        **{
            "403": "Missing or wrong CSRF token (the form again), or a foreign origin (JSON)",
            "409": "The address belongs to another account",
            "422": "The password is not accepted: the form again, with the reason",
        },
    ),
    openapi_extra=form_body("token", optional=("password", "password_again", "without_password")),
)
async def setup_submit(request: Request) -> Response:
    return await _password_submit(request, "setup")


@router.get(
    "/reset",
    summary="Hosted page: ask for a reset link (no token) or choose a new password (token)",
    response_class=HTMLResponse,
    responses=html_responses("The form", **TOKEN_PAGE_ERRORS),
    openapi_extra=token_param(required=False),
)
async def reset_form(request: Request) -> Response:
    token = request.query_params.get("token")
    if token is not None:
        return await _password_form(request, "reset", token)
    svc = services(request)
    csrf = await Csrf.of(request, svc)
    return render_page(
        request,
        "reset_request.html",
        csrf=csrf,
        title=translated(request, N_("Reset your password")),
        form=True,
        email="",
        form_token=csrf.token("reset_request"),
    )


@router.post(
    "/reset",
    summary="Hosted page: send a reset link (form with `email`) or set the new password (`token`)",
    response_class=HTMLResponse,
    responses=html_responses(
        "The link is on its way, or the password is changed and the session cookie set",
        **TOKEN_PAGE_ERRORS,
        **{
            "403": "Missing or wrong CSRF token (the form again), or a foreign origin (JSON)",
            "422": "The password is not accepted: the form again, with the reason",
            "429": "Too many requests",
        },
    ),
    openapi_extra=form_body("email"),
)
async def reset_submit(request: Request) -> Response:
    form = await read_form(request)
    if form.get("token") or request.query_params.get("token"):
        return await _password_submit(request, "reset")
    svc = services(request)
    csrf = await Csrf.of(request, svc)
    email = form.get("email", "")
    context: dict[str, Any] = {
        "title": translated(request, N_("Reset your password")),
        "email": email,
    }
    if not csrf.valid("reset_request", form.get("csrf", "")):
        return render_page(
            request,
            "reset_request.html",
            403,
            csrf=csrf,
            form=True,
            error=translated(request, CSRF_MESSAGE),
            form_token=csrf.token("reset_request"),
            **context,
        )
    try:
        await limit_credentials(request, svc, email)
        async with svc.engine.begin() as conn:
            await passwords.request_password_reset(conn, svc.settings, email)
    except AnonidError as exc:
        return render_page(
            request,
            "reset_request.html",
            exc.status,
            csrf=csrf,
            form=True,
            error=error_text(request, exc),
            headers=exc.headers,
            form_token=csrf.token("reset_request"),
            **context,
        )
    return render_page(
        request,
        "reset_request.html",
        csrf=csrf,
        form=False,
        notice=translated(
            request,
            N_("If an account has this address, a link to choose a new password is on its way."),
        ),
        form_token="",
        **context,
    )
