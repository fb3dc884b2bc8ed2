"""Helpers that mint tokens with the test's own access to the signing key in the database."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from typing import Any

import jwt
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from sqlalchemy.ext.asyncio import AsyncEngine


async def current_key(engine: AsyncEngine) -> tuple[str, Any]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT kid, private_pem FROM signing_keys WHERE retired_at IS NULL "
                    "ORDER BY created_at DESC LIMIT 1"
                )
            )
        ).one()
    return row.kid, serialization.load_pem_private_key(row.private_pem.encode(), password=None)


def claims_for(user_id: str, **overrides: Any) -> dict[str, Any]:
    """Claims of an access token; ``sid`` names no session unless given (``live_session``)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "https://anonid.test",
        "aud": "anonid",
        "sub": user_id,
        "iat": now,
        "exp": now + 3600,
        "jti": secrets.token_urlsafe(8),
        "anon": True,
        "sv": 1,
        "sid": str(uuid.uuid4()),
    }
    claims.update(overrides)
    return claims


async def sign(engine: AsyncEngine, claims: dict[str, Any], **headers: Any) -> str:
    kid, key = await current_key(engine)
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid, **headers})


def sid_of(token: str) -> str:
    """The ``sid`` claim of an access token (read, not verified)."""
    return str(jwt.decode(token, options={"verify_signature": False})["sid"])


async def live_session(engine: AsyncEngine, user_id: str) -> str:
    """A session row for ``user_id`` written by the test itself (no refresh token anyone holds):
    its id, for a ``sid`` claim."""
    from app.platform.ids import new_id

    sid = new_id()
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO sessions (id, user_id, family_hash, live_hashes) "
                "VALUES (:sid, :user, :family, ARRAY[CAST(:hash AS bytea)])"
            ),
            {
                "sid": sid,
                "user": user_id,
                "family": hashlib.sha256(secrets.token_bytes(16)).digest(),
                "hash": hashlib.sha256(secrets.token_bytes(32)).digest(),
            },
        )
    return str(sid)
