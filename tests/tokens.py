"""Helpers that mint tokens with the test's own access to the signing key in the database."""

from __future__ import annotations

import secrets
import time
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
    }
    claims.update(overrides)
    return claims


async def sign(engine: AsyncEngine, claims: dict[str, Any], **headers: Any) -> str:
    kid, key = await current_key(engine)
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid, **headers})
