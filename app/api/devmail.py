"""``GET /dev/mail``: the local catcher's inbox, only while the catcher is in use and only to
loopback clients unless ``ANONID_DEV_MAIL_PUBLIC=true`` (else 404)."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fastapi import APIRouter, Request
from markupsafe import Markup, escape
from starlette.responses import HTMLResponse, Response

from app.api.deps import services
from app.api.errors import responses
from app.api.pages import content_security_policy
from app.errors import AnonidError
from app.platform.catcher import LINK, CaughtMail, read_caught
from app.platform.i18n import language_of_scope
from app.platform.ratelimit import client_ip, is_trusted_proxy
from app.platform.templating import render

router = APIRouter(tags=["development"])

HEADERS = {
    "Cache-Control": "no-store",
    # The links carry live tokens: never leak them to the next site through Referer.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class _Shown:
    name: str
    received_at: datetime
    sender: str
    to: str
    subject: str
    body: Markup


def linkify(text: str) -> Markup:
    """The text, HTML-escaped, with every http(s) URL turned into a link."""
    out: list[str] = []
    last = 0
    for match in LINK.finditer(text):
        out.append(str(escape(text[last : match.start()])))
        url = escape(match.group(0))
        out.append(f'<a href="{url}" rel="noreferrer">{url}</a>')
        last = match.end()
    out.append(str(escape(text[last:])))
    return Markup("".join(out))  # noqa: S704 (every piece above is escaped)


def _shown(mail: CaughtMail) -> _Shown:
    return _Shown(
        mail.name, mail.received_at, mail.sender, mail.to, mail.subject, linkify(mail.text)
    )


def _may_read_caught_mail(request: Request) -> bool:
    """Caught mail holds every reset and setup link: a forgotten ANONID_SMTP_URL behind
    ``--host 0.0.0.0`` must not publish them. Only a loopback client may read it, judged as the
    rate limits judge clients (a trusted proxy's X-Forwarded-For); a loopback peer that forwards
    for someone without being a trusted proxy is a local reverse proxy, so not trusted either."""
    svc = services(request)
    if svc.settings.dev_mail_public:
        return True
    proxies = svc.settings.proxies
    peer = request.client.host if request.client else None
    forwarded = request.headers.getlist("x-forwarded-for")
    if (forwarded or "forwarded" in request.headers) and not (
        peer and is_trusted_proxy(peer, proxies)
    ):
        return False
    client = client_ip(peer, forwarded, proxies)
    try:
        return ipaddress.ip_address(client).is_loopback
    except ValueError:
        return False


@router.get(
    "/dev/mail",
    summary="Emails caught by the local catcher, newest first (only without ANONID_SMTP_URL)",
    response_class=HTMLResponse,
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}},
        **responses("not_found"),
    },
)
async def dev_mail(request: Request) -> Response:
    directory: Path | None = getattr(request.app.state, "caught_mail_dir", None)
    if directory is None:
        raise AnonidError("not_found", "There is no local mail catcher: ANONID_SMTP_URL is set.")
    if not _may_read_caught_mail(request):
        raise AnonidError(
            "not_found",
            "The caught mail is shown only to this machine (set ANONID_DEV_MAIL_PUBLIC=true).",
        )
    mails = await asyncio.to_thread(read_caught, directory)
    settings = services(request).settings
    lang = language_of_scope(request.scope, settings.default_locale)
    context = {"mails": [_shown(m) for m in mails], "directory": str(directory)}
    page = render(settings, "pages/dev_mail.html", lang, context)
    policy = content_security_policy(settings)
    headers = {**HEADERS, "Content-Security-Policy": policy, "Content-Language": lang}
    return HTMLResponse(page, headers=headers)
