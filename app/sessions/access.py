"""Access tokens (CONTRACT §4): short-lived ES256 JWTs that anyone can verify offline.

Claims: ``iss``, ``aud``, ``sub``, ``iat``, ``exp``, ``jti``, ``anon``, ``sv`` and ``sid``, and the
application's own under ``app`` when the ``custom_claims`` hook is on (``app.sessions.store``). A token
lives ``ANONID_ACCESS_TOKEN_TTL_MINUTES``, never past the end of its session's absolute lifetime.

``verify`` checks what the token itself can prove (key, algorithm, issuer, audience, claims,
expiry); whether its user, session version and session are still alive is the database's to say
(``app.sessions.store``). A token that is expired but otherwise valid raises ``session_expired``
(the client should refresh); anything else ``invalid_session``.

A token string that verified once is remembered (a bounded cache), so a browser's cookie costs one
ES256 verification per process rather than one per request; a remembered token is still refused
once it expires (``session_expired``) or once its key is no longer known.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import jwt
import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from app.errors import AnonidError
from app.sessions.keys import KeyRing, _b64

VERIFIED_CACHE_SIZE = 10_000
_NO_SESSION = "00000000-0000-0000-0000-000000000000"
MAX_HEADER_CHARS = 1024
REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti", "iss", "aud", "sv", "anon"]  # and sid (below)


@dataclass(frozen=True, slots=True)
class Claims:
    sub: UUID
    sid: UUID
    anon: bool
    sv: int
    iat: int
    exp: int
    jti: str


class LegacySession(AnonidError):
    """A genuine, unexpired session token of version 1 (one long-lived JWT, no ``sid``): refused
    as ``invalid_session`` everywhere, except that a browser presenting one as its cookie may
    exchange it once for a session (``app.api.deps.authenticate``), so upgrading anonid does not
    cost every guest their account."""

    def __init__(self, sub: UUID, sv: int) -> None:
        super().__init__("invalid_session")
        self.sub = sub
        self.sv = sv


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int
    claims: Claims


class AccessTokens:
    """Issue and verify access tokens with the process's keys."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        settings = ring.settings
        self._issuer = settings.jwt_issuer
        self._audience = settings.audience
        self._ttl = settings.access_ttl_seconds
        self._ecdsa = ec.ECDSA(hashes.SHA256())
        # token -> (claims, kid) of tokens whose signature and claims verified; insertion order
        # is age, so the oldest entry goes first when the cache is full.
        self._verified: dict[str, tuple[Claims, str]] = {}

    def issue(
        self,
        user_id: UUID,
        anonymous: bool,
        session_version: int,
        session_id: UUID,
        *,
        not_after: float | None = None,
        app: dict[str, Any] | None = None,
        sign: bool = True,
    ) -> IssuedToken:
        """A signed access token (JWS compact form), living the access TTL but never past
        ``not_after`` (the session's end), with the application's claims under ``app`` when
        given (the ``custom_claims`` hook, CONTRACT §16). ``sign=False`` gives only its claims
        and an empty token, for a caller that signs it later with the application's claims. The header segment is built once per key, the payload
        with orjson, and the key signs as PyJWT's ES256 would, without building its ECDSA
        parameters on every call: SHA-256, then r||s as 32 bytes each (RFC 7518 §3.4)."""
        current = self.ring.current
        assert current is not None and current.private is not None
        now = int(time.time())
        exp = now + self._ttl
        if not_after is not None:
            exp = max(now + 1, min(exp, int(not_after)))
        claims = Claims(
            sub=user_id,
            sid=session_id,
            anon=anonymous,
            sv=session_version,
            iat=now,
            exp=exp,
            jti=secrets.token_urlsafe(16),
        )
        payload = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user_id),
            "iat": now,
            "exp": exp,
            "jti": claims.jti,
            "anon": anonymous,
            "sv": session_version,
            "sid": str(session_id),
        }
        if not sign:
            return IssuedToken("", exp - now, claims)
        if app is not None:
            payload["app"] = app
        signing_input = self.ring.current_header + b"." + _b64(orjson.dumps(payload)).encode()
        r, s = decode_dss_signature(current.private.sign(signing_input, self._ecdsa))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return IssuedToken(f"{signing_input.decode()}.{_b64(signature)}", exp - now, claims)

    async def verify(self, token: str) -> Claims:
        """The token's claims; ``session_expired`` when it is valid but past ``exp``,
        ``invalid_session`` for anything else. The database checks come after."""
        claims = await self.verify_ignoring_expiry(token)
        if time.time() >= claims.exp:
            raise AnonidError("session_expired")
        return claims

    async def verify_ignoring_expiry(self, token: str) -> Claims:
        """Every check but expiry (``invalid_session``): whose a token is, even once expired."""
        remembered = self._verified.get(token)
        if remembered is not None:
            known, signed_by = remembered
            if signed_by in self.ring.keys:
                return known
            self._verified.pop(token, None)
        header = _unverified_header(token)
        kid = header.get("kid")
        if header.get("alg") != "ES256" or not isinstance(kid, str) or len(kid) > 64:
            raise AnonidError("invalid_session")
        key = await self.ring.find(kid)
        if key is None:
            raise AnonidError("invalid_session")
        try:
            # Expiry is checked below, after everything else: an expired token that is otherwise
            # valid is told apart (session_expired) from a bad one.
            payload = jwt.decode(
                token,
                key.public,
                algorithms=["ES256"],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": REQUIRED_CLAIMS, "verify_exp": False},
            )
            legacy = "sid" not in payload
            claims = Claims(
                sub=UUID(payload["sub"]),
                sid=UUID(payload.get("sid") or _NO_SESSION),
                anon=payload["anon"],
                sv=payload["sv"],
                iat=payload["iat"],
                exp=payload["exp"],
                jti=payload["jti"],
            )
        except (jwt.PyJWTError, KeyError, ValueError, TypeError, AttributeError):
            raise AnonidError("invalid_session") from None
        if type(claims.anon) is not bool or type(claims.sv) is not int:
            raise AnonidError("invalid_session")
        if type(claims.exp) is not int:
            raise AnonidError("invalid_session")
        if legacy:
            # Version 1 signed only anonid's own sessions, so the signature is proof enough.
            if time.time() >= claims.exp:
                raise AnonidError("invalid_session")
            raise LegacySession(claims.sub, claims.sv)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = (claims, kid)
        return claims


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, only to pick the key: ``jwt.decode`` re-reads it strictly and verifies it
    (parsing it here instead of with ``jwt.get_unverified_header`` saves a second full parse)."""
    head, dot, _ = token.partition(".")
    if not dot or len(head) > MAX_HEADER_CHARS:
        raise AnonidError("invalid_session")
    try:
        header = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error):
        raise AnonidError("invalid_session") from None
    if not isinstance(header, dict):
        raise AnonidError("invalid_session")
    return header
