"""The storefront's web app: server-rendered pages, favourites stored in anonid by the browser.

The browser talks to anonid directly, through ``@anonid/client`` in cookie mode
(``static/anonid-client.js``, a copy of ``clients/js/dist/index.js``), to create the guest account,
patch the favourites and convert. This backend only reads the session cookies, which the browser
sends here too because anonid and the storefront share a host (cookies are per host, not per
port), through ``anonid_client``: ``AnonidMiddleware`` verifies the access cookie offline and,
once it has expired, renews the session with anonid and passes the new cookies on with the page.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from anonid_client import AnonidMiddleware, SessionVerifier, session_of
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from storefront.catalog import PRODUCTS

HERE = Path(__file__).parent
LEEWAY_SECONDS = 5


@dataclass(frozen=True, slots=True)
class Visitor:
    """Who the access cookie says the visitor is."""

    user_id: str
    anonymous: bool


def visitor_of(claims: dict[str, Any] | None) -> Visitor | None:
    if claims is None or not isinstance(claims.get("anon"), bool):
        return None
    return Visitor(claims["sub"], claims["anon"])


@dataclass(frozen=True, slots=True)
class Config:
    """Where anonid is, as the browser sees it and as this backend reaches it."""

    anonid_url: str = "http://localhost:8000"
    # anonid as this backend reaches it (its keys, renewals); in compose, http://app:8000.
    api_url: str | None = None
    issuer: str | None = None
    audience: str = "anonid"
    cookie_name: str = "anonid_session"
    refresh_cookie_name: str = "anonid_refresh"
    leeway_seconds: float = LEEWAY_SECONDS
    inbox_url: str | None = None
    # anonid's providers to offer ("Continue with …"), as (name, label): ANONID_OIDC_PROVIDERS.
    providers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ
        return cls(
            anonid_url=env.get("STOREFRONT_ANONID_URL", "http://localhost:8000").rstrip("/"),
            api_url=env.get("STOREFRONT_ANONID_API_URL") or None,
            issuer=env.get("STOREFRONT_ISSUER") or None,
            audience=env.get("STOREFRONT_AUDIENCE", "anonid"),
            cookie_name=env.get("STOREFRONT_COOKIE_NAME", "anonid_session"),
            refresh_cookie_name=env.get("STOREFRONT_REFRESH_COOKIE_NAME", "anonid_refresh"),
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
        config.api_url or config.anonid_url,
        issuer=config.issuer or config.anonid_url,
        audience=config.audience,
        leeway=config.leeway_seconds,
        cookie_name=config.cookie_name,
        refresh_cookie_name=config.refresh_cookie_name,
    )
    templates = Jinja2Templates(directory=HERE / "templates")
    app = FastAPI(title="anonid demo storefront", docs_url=None, redoc_url=None)
    # Every request: the visitor from the access cookie, renewed with anonid once expired (the
    # renewed cookies go out with whatever the route answers).
    app.add_middleware(AnonidMiddleware, verifier=verifier)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

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

    def page(request: Request, name: str, **context: object) -> HTMLResponse:
        who = visitor_of(session_of(request.scope))
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
        return response

    @app.get("/", response_class=HTMLResponse)
    async def products(request: Request) -> HTMLResponse:
        return page(request, "products.html", active="products")

    @app.get("/favourites", response_class=HTMLResponse)
    async def favourites(request: Request) -> HTMLResponse:
        return page(request, "favourites.html", active="favourites")

    @app.get("/api/session")
    async def session(request: Request) -> JSONResponse:
        """What this backend concluded from the cookies (asking anonid only to renew)."""
        who = visitor_of(session_of(request.scope))
        body = None if who is None else {"user_id": who.user_id, "anonymous": who.anonymous}
        return JSONResponse({"visitor": body}, headers={"Cache-Control": "no-store"})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
