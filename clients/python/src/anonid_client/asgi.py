"""An ASGI middleware (plain ASGI: Starlette, FastAPI, Django's ASGI, Quart…) that reads anonid's
session cookies on every HTTP request.

The verified claims (or ``None``) are put in ``scope["state"]["anonid"]``, which Starlette and
FastAPI show as ``request.state.anonid``. When the access token has expired, the session is renewed
with anonid before the app runs: the app sees the new cookies in the request, and anonid's
``Set-Cookie`` headers are added to whatever the app answers. A refused renewal passes anonid's
clearing cookies on the same way.
"""

from __future__ import annotations

from http.cookies import CookieError, SimpleCookie
from typing import Any

from anonid_client.renewal import cookie_values
from anonid_client.verifier import CookieSession, SessionVerifier

STATE_KEY = "anonid"

Scope = dict[str, Any]


def request_cookies(scope: Scope) -> dict[str, str]:
    """The request's cookies (the first value of a repeated name), from its ``Cookie`` headers."""
    cookies: dict[str, str] = {}
    for key, value in scope.get("headers", ()):
        if key != b"cookie":
            continue
        for pair in value.decode("latin-1").split(";"):
            name, sep, content = pair.strip().partition("=")
            if sep and name and name not in cookies:
                cookies[name] = _unquote(content.strip())
    return cookies


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        parsed: SimpleCookie = SimpleCookie()
        try:
            parsed.load(f"v={value}")
        except CookieError:
            return value
        morsel = parsed.get("v")
        return morsel.value if morsel is not None else value
    return value


def session_of(scope: Scope) -> dict[str, Any] | None:
    """The claims the middleware put in the scope (``None`` for no valid session); ``KeyError``
    when the middleware did not run for this request."""
    state = scope.get("state") or {}
    if STATE_KEY not in state:
        raise KeyError("AnonidMiddleware did not run for this request")
    claims: dict[str, Any] | None = state[STATE_KEY]
    return claims


class AnonidMiddleware:
    """``app.add_middleware(AnonidMiddleware, verifier=SessionVerifier("https://id.example.com"))``."""

    def __init__(self, app: Any, verifier: SessionVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        cookies = request_cookies(scope)
        if scope["type"] == "websocket":
            # A handshake cannot set cookies: verify only, never spend the refresh token.
            cookies.pop(self.verifier.refresh_cookie_name, None)
        session = await self.verifier.session_from_cookies(cookies)
        scope.setdefault("state", {})[STATE_KEY] = session.claims
        if not session.set_cookies:
            await self.app(scope, receive, send)
            return
        if session.renewal is not None:
            scope["headers"] = _with_cookies(scope["headers"], session)

        async def send_with_cookies(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers += [(b"set-cookie", c.encode("latin-1")) for c in session.set_cookies]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cookies)


def _with_cookies(headers: Any, session: CookieSession) -> list[tuple[bytes, bytes]]:
    """The request headers with the renewed cookies in place of the spent ones, so an app that
    forwards the visitor's cookies (to anonid, say) forwards live ones."""
    fresh = {k: v for k, v in cookie_values(session.set_cookies).items() if v}
    kept: list[tuple[bytes, bytes]] = []
    others: list[str] = []
    for key, value in headers:
        if key != b"cookie":
            kept.append((key, value))
            continue
        for pair in value.decode("latin-1").split(";"):
            name = pair.strip().partition("=")[0]
            if pair.strip() and name not in fresh:
                others.append(pair.strip())
    cookie = "; ".join([*others, *(f"{k}={v}" for k, v in fresh.items())])
    return [*kept, (b"cookie", cookie.encode("latin-1"))]
