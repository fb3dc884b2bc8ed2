"""A FastAPI dependency giving a route the visitor's anonid session (needs ``fastapi``: the
``anonid-client[fastapi]`` extra).

::

    verifier = SessionVerifier("https://id.example.com")
    session = AnonidSession(verifier)                   # claims or None
    signed_in = AnonidSession(verifier, required=True)  # claims, else 401


    @app.get("/basket")
    async def basket(claims: dict[str, Any] | None = Depends(session)) -> ...: ...

With ``AnonidMiddleware`` installed, the dependency reads what the middleware found. Without it,
the dependency verifies and renews itself, adding the renewed cookies to the response FastAPI
builds from the route's return value; a route that returns its own ``Response`` must copy them
from ``request.state.anonid_set_cookies`` (or use the middleware, which always passes them on).
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request, Response

from anonid_client.asgi import STATE_KEY
from anonid_client.verifier import SessionVerifier

SET_COOKIES_KEY = "anonid_set_cookies"


class AnonidSession:
    """A dependency: the access token's claims, or ``None`` (``required=True``: ``401``)."""

    def __init__(self, verifier: SessionVerifier, *, required: bool = False) -> None:
        self.verifier = verifier
        self.required = required

    async def __call__(self, request: Request, response: Response) -> dict[str, Any] | None:
        state = request.scope.setdefault("state", {})
        if STATE_KEY in state:
            claims: dict[str, Any] | None = state[STATE_KEY]
        else:
            session = await self.verifier.session_from_cookies(request.cookies)
            claims = session.claims
            state[STATE_KEY] = claims
            state[SET_COOKIES_KEY] = session.set_cookies
            for header in session.set_cookies:
                response.headers.append("set-cookie", header)
        if claims is None and self.required:
            raise HTTPException(
                status_code=401,
                detail={"error": "invalid_session", "message": "Sign in first."},
            )
        return claims
