"""Offline verification of anonid's access tokens, and server-side renewal of expired sessions.

A token is accepted when it is an ES256 JWT signed by a key anonid publishes at
``{base_url}/.well-known/jwks.json``, its ``iss`` and ``aud`` match, it has not expired and it
carries ``sub`` and ``sid``. No call to anonid is made per request: keys are cached
(``anonid_client.keys``).

What offline verification cannot see is revocation (a log-out everywhere, a password change, a
conversion): such a token stays acceptable here until it expires, at most anonid's
``ANONID_ACCESS_TOKEN_TTL_MINUTES``. Ask anonid (``GET /v1/me``) where that matters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from anonid_client import renewal
from anonid_client.errors import InvalidSession, SessionExpired, Unavailable
from anonid_client.keys import KeySet
from anonid_client.renewal import RefreshCall, Renewal

log = logging.getLogger("anonid_client")

REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud", "sid"]


@dataclass(frozen=True, slots=True)
class CookieSession:
    """What a request's cookies amount to: the claims (``None`` when there is no valid session)
    and the ``Set-Cookie`` headers to add to the response (after a renewal, or a refused one)."""

    claims: dict[str, Any] | None
    set_cookies: list[str] = field(default_factory=list)
    renewal: Renewal | None = None


class SessionVerifier:
    """Verifies anonid access tokens offline and renews expired sessions.

    ``base_url`` is anonid as this backend reaches it; ``issuer`` (the tokens' ``iss``, anonid's
    ``ANONID_ISSUER``) defaults to it. ``leeway`` is the clock skew allowed between anonid and
    this backend (on ``exp``, and on ``iat`` for a token that seems to come from the future).
    """

    def __init__(
        self,
        base_url: str,
        *,
        audience: str = "anonid",
        issuer: str | None = None,
        leeway: float = 5,
        cookie_name: str = "anonid_session",
        refresh_cookie_name: str = "anonid_refresh",
        timeout: float = 5,
    ) -> None:
        base = base_url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL: {base_url!r}")
        self.base_url = base
        self.audience = audience
        self.issuer = issuer if issuer is not None else base
        self.leeway = leeway
        self.cookie_name = cookie_name
        self.refresh_cookie_name = refresh_cookie_name
        self.keys = KeySet(f"{base}/.well-known/jwks.json", timeout=timeout)
        self._refresh = RefreshCall(
            f"{base}/v1/session/refresh", cookie_name, refresh_cookie_name, timeout
        )

    # Verification ---------------------------------------------------------------------------

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; ``InvalidSession`` (``SessionExpired`` when only ``exp`` failed)
        otherwise. May fetch anonid's keys (blocking): in async code use ``verify_async``."""
        return self._decode(token, self.keys.key(_kid(token)))

    async def verify_async(self, token: str) -> dict[str, Any]:
        """``verify`` for async code: a key fetch does not block the event loop."""
        return self._decode(token, await self.keys.key_async(_kid(token)))

    def _decode(self, token: str, key: Any) -> dict[str, Any]:
        try:
            # exp is checked below, after the signature, iss and aud (PyJWT checks it before
            # them): SessionExpired must mean "valid but for its age", or renewing is unsafe.
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["ES256"],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": REQUIRED_CLAIMS, "verify_exp": False},
            )
        except jwt.PyJWTError as exc:
            raise InvalidSession(f"The token does not verify: {exc}") from None
        if not all(isinstance(claims.get(name), str) for name in ("sub", "sid")):
            raise InvalidSession("The token's sub and sid must be strings.")
        if not isinstance(claims["exp"], int | float) or isinstance(claims["exp"], bool):
            raise InvalidSession("The token's exp must be a number.")
        if claims["exp"] <= time.time() - self.leeway:
            raise SessionExpired("The access token has expired; renew the session.")
        return claims

    # Renewal --------------------------------------------------------------------------------

    def renew(self, refresh_token: str) -> Renewal:
        """Renews a session server-side with one call to anonid, forwarding ``refresh_token`` as
        the refresh cookie (blocking; ``renew_async`` in async code). Pass
        ``Renewal.set_cookies`` on to the browser. ``InvalidSession`` when anonid refuses (its
        ``set_cookies`` clear the browser's cookies), ``Unavailable`` when it cannot be asked."""
        return renewal.renew_blocking(self._refresh, refresh_token)

    async def renew_async(self, refresh_token: str) -> Renewal:
        """``renew`` for async code."""
        return await renewal.renew_async(self._refresh, refresh_token)

    # Both, from a request's cookies ---------------------------------------------------------

    async def session_from_cookies(self, cookies: Mapping[str, str]) -> CookieSession:
        """The session the access cookie holds; renewed with the refresh cookie when the access
        token has expired (or is missing). A token that fails any other check is never renewed."""
        access = cookies.get(self.cookie_name) or None
        refresh = cookies.get(self.refresh_cookie_name) or None
        if access is not None:
            try:
                return CookieSession(await self.verify_async(access))
            except SessionExpired:
                pass
            except InvalidSession as exc:
                _log_refusal(exc)
                return CookieSession(None)
        if refresh is None:
            return CookieSession(None)
        try:
            renewed = await self.renew_async(refresh)
        except InvalidSession as exc:
            _log_refusal(exc)
            return CookieSession(None, exc.set_cookies)
        try:
            claims: dict[str, Any] | None = await self.verify_async(renewed.access_token)
        except InvalidSession as exc:
            _log_refusal(exc)
            claims = None
        return CookieSession(claims, renewed.set_cookies, renewed)


def _kid(token: str) -> str:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidSession("The token is not a JWT.") from None
    kid = header.get("kid")
    if header.get("alg") != "ES256" or not isinstance(kid, str):
        raise InvalidSession("The token is not ES256 with a kid.")
    return kid


def _log_refusal(exc: InvalidSession) -> None:
    if isinstance(exc, Unavailable):
        log.warning("%s", exc)
