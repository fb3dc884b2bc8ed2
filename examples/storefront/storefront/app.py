"""The storefront's web app: server-rendered pages, favourites stored in anonid by the browser.

The browser talks to anonid directly (``credentials: "include"``) to create the guest account,
patch the favourites and start the sign-up; this backend only reads the session cookies, which
the browser sends here too because anonid and the storefront share a host (cookies are per host,
not per port). When the access cookie has expired, the backend renews the session with anonid and
passes the new cookies on with its page (``auth.SessionRenewer``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from storefront.auth import LEEWAY_SECONDS, SessionRenewer, SessionVerifier, Visitor
from storefront.catalog import PRODUCTS

HERE = Path(__file__).parent


@dataclass(frozen=True, slots=True)
class Config:
    """Where anonid is, as the browser sees it and as this backend sees it."""

    anonid_url: str = "http://localhost:8000"
    jwks_url: str | None = None
    issuer: str | None = None
    audience: str = "anonid"
    cookie_name: str = "anonid_session"
    refresh_cookie_name: str = "anonid_refresh"
    refresh_url: str | None = None
    leeway_seconds: float = LEEWAY_SECONDS
    inbox_url: str | None = None
    # anonid's providers to offer ("Continue with …"), as (name, label): ANONID_OIDC_PROVIDERS.
    providers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ
        return cls(
            anonid_url=env.get("STOREFRONT_ANONID_URL", "http://localhost:8000").rstrip("/"),
            jwks_url=env.get("STOREFRONT_JWKS_URL") or None,
            issuer=env.get("STOREFRONT_ISSUER") or None,
            audience=env.get("STOREFRONT_AUDIENCE", "anonid"),
            cookie_name=env.get("STOREFRONT_COOKIE_NAME", "anonid_session"),
            refresh_cookie_name=env.get("STOREFRONT_REFRESH_COOKIE_NAME", "anonid_refresh"),
            refresh_url=env.get("STOREFRONT_REFRESH_URL") or None,
            leeway_seconds=float(env.get("STOREFRONT_LEEWAY_SECONDS", LEEWAY_SECONDS)),
            inbox_url=env.get("STOREFRONT_INBOX_URL") or None,
            providers=_providers(env.get("STOREFRONT_PROVIDERS", "")),
        )


def _providers(value: str) -> tuple[tuple[str, str], ...]:
    """``google,my-idp=My IdP`` as ((name, label), …); the label defaults to the name."""
    found = []
    for item in value.split(","):
        name, _, label = item.strip().partition("=")
        if name:
            found.append((name, label.strip() or " ".join(p.capitalize() for p in name.split("-"))))
    return tuple(found)


def create_app(config: Config | None = None) -> FastAPI:
    config = config or Config.from_env()
    verifier = SessionVerifier(
        config.jwks_url or f"{config.anonid_url}/.well-known/jwks.json",
        issuer=config.issuer or config.anonid_url,
        audience=config.audience,
        leeway=config.leeway_seconds,
    )
    renewer = SessionRenewer(
        config.refresh_url or f"{config.anonid_url}/v1/session/refresh",
        config.cookie_name,
        config.refresh_cookie_name,
    )
    templates = Jinja2Templates(directory=HERE / "templates")
    app = FastAPI(title="anonid demo storefront", docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    async def visitor(request: Request, response: Response) -> Visitor | None:
        """Who the access cookie says the visitor is, renewing it with anonid once it has
        expired; the renewed cookies are added to ``response``."""
        # PyJWKClient and the renewal use urllib (blocking): keep them off the loop.
        who, expired = await run_in_threadpool(
            verifier.check, request.cookies.get(config.cookie_name)
        )
        refresh_token = request.cookies.get(config.refresh_cookie_name)
        if who is not None or not refresh_token:
            return who
        if not expired and request.cookies.get(config.cookie_name):
            return None  # a bad token: renewing would not make it good
        renewal = await run_in_threadpool(renewer.renew, refresh_token)
        if renewal is None:
            return None
        for header in renewal.set_cookies:
            response.headers.append("set-cookie", header)
        if renewal.access_token is None:
            return None
        return await run_in_threadpool(verifier.verify, renewal.access_token)

    def provider_links(request: Request) -> list[dict[str, str]]:
        # Back to this very page after the provider; anonid checks it is on an allowed origin.
        back = str(request.url.remove_query_params("error"))
        query = urlencode({"return_to": back})
        return [
            {
                "name": n,
                "label": label,
                "url": f"{config.anonid_url}/v1/oauth/{n}/authorize?{query}",
            }
            for n, label in config.providers
        ]

    def page(
        request: Request, name: str, who: Visitor | None, renewed: Response, **context: object
    ) -> HTMLResponse:
        response = templates.TemplateResponse(
            request,
            name,
            {
                "anonid_url": config.anonid_url,
                "inbox_url": config.inbox_url,
                "visitor": who,
                "session": "none" if who is None else "guest" if who.anonymous else "registered",
                "products": PRODUCTS,
                "providers": provider_links(request),
                **context,
            },
        )
        # The page shows who is signed in: never let a cache hand it to someone else.
        response.headers["Cache-Control"] = "no-store"
        for header in renewed.headers.getlist("set-cookie"):
            response.headers.append("set-cookie", header)
        return response

    @app.get("/", response_class=HTMLResponse)
    async def products(request: Request) -> HTMLResponse:
        renewed = Response()
        who = await visitor(request, renewed)
        return page(request, "products.html", who, renewed, active="products")

    @app.get("/favourites", response_class=HTMLResponse)
    async def favourites(request: Request) -> HTMLResponse:
        renewed = Response()
        who = await visitor(request, renewed)
        return page(request, "favourites.html", who, renewed, active="favourites")

    @app.get("/api/session")
    async def session(request: Request) -> JSONResponse:
        """What this backend concluded from the cookies (asking anonid only to renew)."""
        renewed = Response()
        who = await visitor(request, renewed)
        body = None if who is None else {"user_id": who.user_id, "anonymous": who.anonymous}
        response = JSONResponse({"visitor": body}, headers={"Cache-Control": "no-store"})
        for header in renewed.headers.getlist("set-cookie"):
            response.headers.append("set-cookie", header)
        return response

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
