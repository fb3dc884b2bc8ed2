"""Offline verification of anonid's access cookie against its JWKS, and server-side renewal.

This is the pattern every backend that sits beside anonid needs: the access cookie is a JWT signed
with ES256; its public keys are published at ``/.well-known/jwks.json``. Keys are cached, so a page
view costs no call to anonid. The access token is short-lived (``ANONID_ACCESS_TOKEN_TTL_MINUTES``,
15 by default): once it has expired, this backend renews the session with one call to anonid
(``POST /v1/session/refresh`` forwarding the refresh cookie) and passes anonid's ``Set-Cookie``
headers on to the browser (``SessionRenewer``).

What offline verification cannot see is revocation (log-out everywhere, a password change, a
conversion): a revoked access token stays acceptable here until it expires, at most the access
lifetime. Ask anonid (``GET /v1/me``) before anything where that matters, such as taking a payment.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.cookies import SimpleCookie

import jwt

log = logging.getLogger("storefront.auth")

# An unknown kid may mean anonid rotated its keys: fetch the set again, but not more often than
# this, so a stream of tokens with made-up kids cannot turn into a stream of requests to anonid.
UNKNOWN_KID_REFRESH_SECONDS = 30.0
JWKS_CACHE_SECONDS = 300
LEEWAY_SECONDS = 5
RENEW_TIMEOUT_SECONDS = 5


@dataclass(frozen=True, slots=True)
class Visitor:
    """Who the cookie says the visitor is."""

    user_id: str
    anonymous: bool
    expires_at: int


class SessionVerifier:
    """Verifies anonid session tokens: ES256, a known kid, ``iss``, ``aud`` and ``exp``."""

    def __init__(
        self, jwks_url: str, issuer: str, audience: str, leeway: float = LEEWAY_SECONDS
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self._jwks = jwt.PyJWKClient(
            jwks_url, cache_jwk_set=True, lifespan=JWKS_CACHE_SECONDS, cache_keys=False, timeout=5
        )
        self._lock = threading.Lock()
        self._last_refresh = 0.0

    def verify(self, token: str | None) -> Visitor | None:
        """The visitor for a valid token; ``None`` for no token or any token that fails a check."""
        return self.check(token)[0]

    def check(self, token: str | None) -> tuple[Visitor | None, bool]:
        """The visitor for a valid token, and whether the token failed only by having expired
        (then the session may be renewed)."""
        if not token:
            return None, False
        try:
            header = jwt.get_unverified_header(token)
            key = self._key(header.get("kid"))
            if key is None or header.get("alg") != "ES256":
                return None, False
            claims = jwt.decode(
                token,
                key,
                algorithms=["ES256"],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "sub", "iss", "aud", "sid"]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            log.warning("cannot fetch anonid's JWKS: %s", exc)
            return None, False
        except jwt.ExpiredSignatureError:
            # Raised only once the signature, issuer and audience have been checked.
            return None, True
        except jwt.PyJWTError:
            return None, False
        anonymous = claims.get("anon")
        if not isinstance(claims["sub"], str) or not isinstance(anonymous, bool):
            return None, False
        return Visitor(claims["sub"], anonymous, int(claims["exp"])), False

    def _key(self, kid: object) -> jwt.PyJWK | None:
        if not isinstance(kid, str):
            return None
        key = self._find(kid, refresh=False)
        if key is None:
            with self._lock:
                if time.monotonic() - self._last_refresh >= UNKNOWN_KID_REFRESH_SECONDS:
                    self._last_refresh = time.monotonic()
                    key = self._find(kid, refresh=True)
        return key

    def _find(self, kid: str, *, refresh: bool) -> jwt.PyJWK | None:
        for key in self._jwks.get_jwk_set(refresh=refresh).keys:
            if key.key_id == kid:
                return key
        return None


@dataclass(frozen=True, slots=True)
class Renewal:
    """anonid's answer to a server-side refresh: the ``Set-Cookie`` headers to pass on to the
    browser, and the new access token (``None`` when anonid refused: the session has ended, and
    the headers then clear the browser's cookies)."""

    access_token: str | None
    set_cookies: list[str]


class SessionRenewer:
    """Renews an expired session server-side: ``POST /v1/session/refresh`` with the browser's
    refresh cookie, one call per expired access token (about once per access lifetime)."""

    def __init__(self, refresh_url: str, cookie_name: str, refresh_cookie_name: str) -> None:
        if not refresh_url.startswith(("http://", "https://")):
            raise ValueError(f"the refresh URL must be http(s): {refresh_url!r}")
        self.refresh_url = refresh_url
        self.cookie_name = cookie_name
        self.refresh_cookie_name = refresh_cookie_name

    def renew(self, refresh_token: str) -> Renewal | None:
        """Blocking (urllib): run it off the event loop. ``None`` when anonid is unreachable."""
        # The scheme is checked in __init__ (http or https only).
        request = urllib.request.Request(  # noqa: S310
            self.refresh_url,
            data=b"",
            method="POST",
            headers={"Cookie": f"{self.refresh_cookie_name}={refresh_token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=RENEW_TIMEOUT_SECONDS) as response:  # noqa: S310
                set_cookies = response.headers.get_all("Set-Cookie") or []
        except urllib.error.HTTPError as refused:
            # 401: the session ended (logged out, reused, expired). anonid's answer clears the
            # cookies; passing it on signs the browser out here too.
            return Renewal(None, refused.headers.get_all("Set-Cookie") or [])
        except OSError as exc:
            log.warning("cannot renew the session at anonid: %s", exc)
            return None
        return Renewal(self._access_token(set_cookies), set_cookies)

    def _access_token(self, set_cookies: list[str]) -> str | None:
        for header in set_cookies:
            cookie: SimpleCookie = SimpleCookie()
            cookie.load(header)
            morsel = cookie.get(self.cookie_name)
            if morsel is not None and morsel.value:
                return morsel.value
        return None
