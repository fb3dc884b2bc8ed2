"""Signing keys: ES256 keys kept in the database, loaded once per process, published as JWKS.

Keys are cached per process; the cache is refreshed every ``ANONID_KEY_CACHE_SECONDS`` (default
``KEY_CACHE_SECONDS``) and at once (at most every few seconds) when a token names a ``kid`` it does
not know, so a key rotated by another process is honoured within the cache lifetime. A retired key
stays published (and accepted) for the access-token lifetime plus ``RETIRED_KEY_GRACE``, so every
token it signed has expired before it goes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.settings import Settings

KEY_CACHE_SECONDS = 60  # the default of ANONID_KEY_CACHE_SECONDS
UNKNOWN_KID_REFRESH_SECONDS = 5
KEYS_LOCK = 0x616E6F6E_0003


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
    "WHERE retired_at IS NULL OR retired_at > now() - make_interval(secs => :keep) "
    "ORDER BY created_at DESC"
)


RETIRED_KEY_GRACE_SECONDS = 300


class KeyRing:
    """The process's view of the signing keys: the current one signs, every known one verifies."""

    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.current: _Key | None = None
        self.current_header = b""
        self.keys: dict[str, _Key] = {}
        self.loaded_at = 0.0
        self._keep_seconds = settings.access_ttl_seconds + RETIRED_KEY_GRACE_SECONDS

    async def load(self) -> None:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_LOAD_KEYS, {"keep": self._keep_seconds})).all()
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
        self.keys, self.current, self.loaded_at = keys, current, time.monotonic()
        self.current_header = current.header_segment

    async def refresh_if_stale(self) -> None:
        if time.monotonic() - self.loaded_at > self.settings.key_cache_seconds:
            await self.load()

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.jwk for k in self.keys.values()]}

    async def find(self, kid: str) -> _Key | None:
        """The key named ``kid``, reloading once (at most every few seconds) when it is unknown:
        maybe another process rotated the keys."""
        key = self.keys.get(kid)
        if key is None and time.monotonic() - self.loaded_at > UNKNOWN_KID_REFRESH_SECONDS:
            await self.load()
            key = self.keys.get(kid)
        return key
