"""Helpers for the lifecycle tests (cull, admin, stats, privacy, observability).

Tests share one database per run, so cull tests move their own accounts far into the past
(``FAR_PAST_DAYS``) and cull with ``older_than_days`` just short of it: nothing another test made
is ever old enough to be touched.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.platform.ids import new_id

FAR_PAST_DAYS = 20_000
FAR_CUTOFF_DAYS = FAR_PAST_DAYS - 10
ADMIN_KEY = "test-admin-key-" + "k" * 24


def admin_headers(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def new_guest(client: httpx.AsyncClient) -> tuple[str, str]:
    """A new anonymous account through the API: (id, bearer token)."""
    r = await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})
    assert r.status_code == 201, r.text
    body = r.json()
    return body["user"]["id"], body["access_token"]


async def new_guests(client: httpx.AsyncClient, n: int) -> list[str]:
    return [(await new_guest(client))[0] for _ in range(n)]


async def insert_guests(engine: AsyncEngine, n: int, *, days_ago: int = 0) -> list[str]:
    """Anonymous accounts written directly (faster than the API), untouched for ``days_ago``."""
    ids = [new_id() for _ in range(n)]
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO users (id, username, is_anonymous, created_at, updated_at) "
                "SELECT id, 'guest-t' || replace(id::text, '-', ''), true, "
                "now() - make_interval(days => :d), now() - make_interval(days => :d) "
                "FROM unnest(CAST(:ids AS uuid[])) AS id"
            ),
            {"ids": ids, "d": days_ago},
        )
    return [str(i) for i in ids]


async def insert_registered(engine: AsyncEngine, *, days_ago: int = 0) -> tuple[str, str]:
    """A registered account written directly: (id, email)."""
    user_id = new_id()
    email = f"reg-{secrets.token_hex(6)}@example.test"
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO users (id, email, is_anonymous, password_hash, converted_at, "
                "created_at, updated_at) VALUES (:id, :email, false, :hash, now(), "
                "now() - make_interval(days => :d), now() - make_interval(days => :d))"
            ),
            {
                "id": user_id,
                "email": email,
                "hash": "$argon2id$v=19$m=19456,t=2,p=1$x$y",
                "d": days_ago,
            },
        )
    return str(user_id), email


async def backdate(engine: AsyncEngine, ids: Iterable[str], days: int) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE users SET updated_at = now() - make_interval(days => :d), "
                "created_at = least(created_at, now() - make_interval(days => :d)) "
                "WHERE id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": [uuid.UUID(i) for i in ids], "d": days},
        )


async def add_link(engine: AsyncEngine, user_id: str, *, purpose: str = "setup") -> str:
    """An outstanding link for the user; returns the token value (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO link_tokens (token_hash, user_id, purpose, email, expires_at) "
                "VALUES (:h, :u, :p, :e, now() + interval '1 day')"
            ),
            {
                "h": hashlib.sha256(token.encode()).digest(),
                "u": uuid.UUID(user_id),
                "p": purpose,
                "e": f"link-{secrets.token_hex(4)}@example.test",
            },
        )
    return token


async def add_email(
    engine: AsyncEngine, user_id: str, secret_in_body: str, *, kind: str = "conversion_setup"
) -> int:
    """A queued email for the user whose bodies carry ``secret_in_body`` (like a link token)."""
    payload: dict[str, Any] = {
        "email_kind": kind,
        "to": "someone@example.test",
        "from": "anonid <no-reply@localhost>",
        "subject": "Finish setting up your account",
        "text": f"https://anonid.test/account/setup?token={secret_in_body}",
        "html": f"<a href='https://anonid.test/account/setup?token={secret_in_body}'>go</a>",
        "message_id": f"<{secrets.token_hex(8)}@anonid.test>",
    }
    async with engine.begin() as conn:
        row_id = await conn.scalar(
            sa.text(
                "INSERT INTO outbox (kind, user_id, payload) "
                "VALUES ('email', :u, CAST(:p AS jsonb)) RETURNING id"
            ),
            {"u": uuid.UUID(user_id), "p": orjson.dumps(payload).decode()},
        )
    return int(row_id)


async def existing(engine: AsyncEngine, ids: Iterable[str]) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT id FROM users WHERE id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": [uuid.UUID(i) for i in ids]},
        )
        return {str(r.id) for r in rows}


async def stale_count(engine: AsyncEngine, older_than_days: int) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                sa.text(
                    "SELECT count(*) FROM users WHERE is_anonymous "
                    "AND updated_at < now() - make_interval(days => :d)"
                ),
                {"d": older_than_days},
            )
        )


async def culled_ids_since(engine: AsyncEngine, since: Any) -> list[str]:
    """Every id in ``user.culled`` events written after ``since`` (duplicates kept)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT jsonb_array_elements_text(payload -> 'ids') AS id FROM events "
                "WHERE type = 'user.culled' AND created_at >= :since"
            ),
            {"since": since},
        )
        return [r.id for r in rows]


async def db_now(engine: AsyncEngine) -> Any:
    async with engine.connect() as conn:
        return await conn.scalar(sa.text("SELECT clock_timestamp()"))
