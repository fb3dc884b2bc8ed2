"""Offline verification of the anonid session cookie against anonid's JWKS.

This is the pattern every backend that sits beside anonid needs: the cookie is a JWT signed with
ES256; its public keys are published at ``/.well-known/jwks.json``. Keys are cached, so a page view
costs no call to anonid. What offline verification cannot see is revocation (log-out everywhere,
a password change): a revoked token stays acceptable here until it expires. Ask anonid
(``GET /v1/me``) before anything where that matters, such as taking a payment.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import jwt

log = logging.getLogger("storefront.auth")

# An unknown kid may mean anonid rotated its keys: fetch the set again, but not more often than
# this, so a stream of tokens with made-up kids cannot turn into a stream of requests to anonid.
UNKNOWN_KID_REFRESH_SECONDS = 30.0
JWKS_CACHE_SECONDS = 300
LEEWAY_SECONDS = 30


@dataclass(frozen=True, slots=True)
class Visitor:
    """Who the cookie says the visitor is."""

    user_id: str
    anonymous: bool
    expires_at: int


class SessionVerifier:
    """Verifies anonid session tokens: ES256, a known kid, ``iss``, ``aud`` and ``exp``."""

    def __init__(self, jwks_url: str, issuer: str, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self._jwks = jwt.PyJWKClient(
            jwks_url, cache_jwk_set=True, lifespan=JWKS_CACHE_SECONDS, cache_keys=False, timeout=5
        )
        self._lock = threading.Lock()
        self._last_refresh = 0.0

    def verify(self, token: str | None) -> Visitor | None:
        """The visitor for a valid token; ``None`` for no token or any token that fails a check."""
        if not token:
            return None
        try:
            header = jwt.get_unverified_header(token)
            key = self._key(header.get("kid"))
            if key is None or header.get("alg") != "ES256":
                return None
            claims = jwt.decode(
                token,
                key,
                algorithms=["ES256"],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            log.warning("cannot fetch anonid's JWKS: %s", exc)
            return None
        except jwt.PyJWTError:
            return None
        anonymous = claims.get("anon")
        if not isinstance(claims["sub"], str) or not isinstance(anonymous, bool):
            return None
        return Visitor(claims["sub"], anonymous, int(claims["exp"]))

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
