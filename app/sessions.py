"""Sessions: ES256 signing keys kept in the database, JWT issue and verify, the cookie, JWKS.

Keys are loaded once and cached per process; the cache is refreshed every ``KEY_CACHE_SECONDS``
(``ANONID_KEY_CACHE_SECONDS``, default ``KEY_CACHE_SECONDS``) and at once (at most every few
seconds) when a token names a ``kid`` it does not know, so a key rotated by another process is
honoured within the cache lifetime.

A token string that verified once is remembered (a bounded cache), so a browser's cookie costs one
ES256 verification per process rather than one per request; a remembered token is still refused
once it expires or once its key is no longer known, and the database checks run on every request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import jwt
import orjson
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwt.algorithms import ECAlgorithm
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.errors import AnonidError
from app.settings import Settings

KEY_CACHE_SECONDS = 60  # the default of ANONID_KEY_CACHE_SECONDS
UNKNOWN_KID_REFRESH_SECONDS = 5
KEYS_LOCK = 0x616E6F6E_0003
RENEW_AFTER_SECONDS = 86400
VERIFIED_CACHE_SIZE = 10_000
MAX_HEADER_CHARS = 1024


@dataclass(frozen=True, slots=True)
class Claims:
    sub: UUID
    anon: bool
    sv: int
    iat: int
    exp: int
    jti: str


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str
    private: ec.EllipticCurvePrivateKey | None
    public: ec.EllipticCurvePublicKey
    jwk: dict[str, Any]

    @property
    def header_segment(self) -> bytes:
        """The JOSE header of every token this key signs, as its base64url segment (what
        ``jwt.encode`` writes: compact JSON, sorted keys)."""
        header = {"alg": "ES256", "kid": self.kid, "typ": "JWT"}
        return _b64(orjson.dumps(header, option=orjson.OPT_SORT_KEYS)).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_key_material() -> tuple[str, str, dict[str, Any]]:
    """A fresh P-256 key: (kid, private PEM, public JWK). The kid is the RFC 7638 thumbprint."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(private.public_key()))
    thumb_input = json.dumps(
        {k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True
    )
    kid = _b64(hashlib.sha256(thumb_input.encode()).digest())[:22]
    jwk.update({"kid": kid, "use": "sig", "alg": "ES256"})
    return kid, pem, jwk


async def ensure_signing_key(conn: AsyncConnection) -> None:
    """Create the first signing key unless one exists (safe when several processes start at once)."""
    await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": KEYS_LOCK})
    exists = await conn.scalar(
        sa.text("SELECT EXISTS (SELECT 1 FROM signing_keys WHERE retired_at IS NULL)")
    )
    if not exists:
        await _insert_key(conn)


async def rotate_signing_key(conn: AsyncConnection) -> str:
    """Make a new key current; older keys are retired but stay published until their tokens expire."""
    await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": KEYS_LOCK})
    await conn.execute(
        sa.text("UPDATE signing_keys SET retired_at = now() WHERE retired_at IS NULL")
    )
    return await _insert_key(conn)


async def _insert_key(conn: AsyncConnection) -> str:
    kid, pem, jwk = new_key_material()
    await conn.execute(
        sa.text(
            "INSERT INTO signing_keys (kid, private_pem, public_jwk, created_at) "
            "VALUES (:kid, :pem, CAST(:jwk AS jsonb), clock_timestamp())"
        ),
        {"kid": kid, "pem": pem, "jwk": json.dumps(jwk)},
    )
    return kid


_LOAD_KEYS = sa.text(
    "SELECT kid, private_pem, public_jwk, retired_at IS NULL AS active FROM signing_keys "
    "WHERE retired_at IS NULL OR retired_at > now() - make_interval(days => :keep_days) "
    "ORDER BY created_at DESC"
)


class KeyRing:
    """The process's view of the signing keys, and the JWT rules of CONTRACT §4."""

    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self.settings = settings
        self.engine = engine
        self._current: _Key | None = None
        self._current_header = b""
        self._ecdsa = ec.ECDSA(hashes.SHA256())
        self._issuer = settings.jwt_issuer
        self._audience = settings.audience
        self._keys: dict[str, _Key] = {}
        self._loaded_at = 0.0
        self._keep_days = max(settings.anonymous_ttl_days, settings.session_ttl_days) + 1
        self._anon_ttl = settings.anonymous_ttl_days * 86400
        self._session_ttl = settings.session_ttl_days * 86400
        # token -> (claims, kid) of tokens whose signature and claims verified; insertion order
        # is age, so the oldest entry goes first when the cache is full.
        self._verified: dict[str, tuple[Claims, str]] = {}

    async def load(self) -> None:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_LOAD_KEYS, {"keep_days": self._keep_days})).all()
        keys: dict[str, _Key] = {}
        current: _Key | None = None
        for row in rows:
            private = serialization.load_pem_private_key(row.private_pem.encode(), password=None)
            assert isinstance(private, ec.EllipticCurvePrivateKey)
            key = _Key(
                row.kid, private if row.active else None, private.public_key(), row.public_jwk
            )
            keys[key.kid] = key
            if current is None and row.active:
                current = key
        if current is None:
            raise RuntimeError("no current signing key; run the service once to create one")
        self._keys, self._current, self._loaded_at = keys, current, time.monotonic()
        self._current_header = current.header_segment

    async def refresh_if_stale(self) -> None:
        if time.monotonic() - self._loaded_at > self.settings.key_cache_seconds:
            await self.load()

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.jwk for k in self._keys.values()]}

    def ttl(self, anonymous: bool) -> int:
        return self._anon_ttl if anonymous else self._session_ttl

    def issue(self, user_id: UUID, anonymous: bool, session_version: int) -> IssuedToken:
        """A signed session token (JWS compact form): the header segment is built once per key,
        the payload with orjson, and the key signs as PyJWT's ES256 would, without building its
        ECDSA parameters on every call: SHA-256, then r||s as 32 bytes each (RFC 7518 §3.4)."""
        current = self._current
        assert current is not None and current.private is not None
        now = int(time.time())
        ttl = self.ttl(anonymous)
        payload = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user_id),
            "iat": now,
            "exp": now + ttl,
            "jti": secrets.token_urlsafe(16),
            "anon": anonymous,
            "sv": session_version,
        }
        signing_input = self._current_header + b"." + _b64(orjson.dumps(payload)).encode()
        r, s = decode_dss_signature(current.private.sign(signing_input, self._ecdsa))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return IssuedToken(f"{signing_input.decode()}.{_b64(signature)}", ttl)

    async def verify(self, token: str) -> Claims:
        """Signature, algorithm, issuer, audience and expiry; the database checks come after."""
        remembered = self._verified.get(token)
        if remembered is not None:
            known, signed_by = remembered
            if time.time() < known.exp and signed_by in self._keys:
                return known
            self._verified.pop(token, None)
        header = _unverified_header(token)
        kid = header.get("kid")
        if header.get("alg") != "ES256" or not isinstance(kid, str) or len(kid) > 64:
            raise AnonidError("invalid_session")
        key = self._keys.get(kid)
        if key is None and time.monotonic() - self._loaded_at > UNKNOWN_KID_REFRESH_SECONDS:
            await self.load()  # maybe another process rotated the keys
            key = self._keys.get(kid)
        if key is None:
            raise AnonidError("invalid_session")
        try:
            payload = jwt.decode(
                token,
                key.public,
                algorithms=["ES256"],
                audience=self.settings.audience,
                issuer=self.settings.jwt_issuer,
                options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
            )
            claims = Claims(
                sub=UUID(payload["sub"]),
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


def needs_renewal(claims: Claims) -> bool:
    """Anonymous sessions slide: a token older than a day is replaced (at most daily)."""
    return claims.anon and time.time() - claims.iat > RENEW_AFTER_SECONDS


class CookieJar:
    """Set-Cookie values for the session cookie, built once from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.name = settings.cookie_name
        attrs = "; Path=/; HttpOnly; SameSite=Lax"
        if settings.cookie_secure:
            attrs += "; Secure"
        if settings.cookie_domain:
            attrs += f"; Domain={settings.cookie_domain}"
        self._attrs = attrs
        self.clear = f'{self.name}=""; Max-Age=0{attrs}'

    def set(self, issued: IssuedToken) -> str:
        return f"{self.name}={issued.token}; Max-Age={issued.expires_in}{self._attrs}"
