"""The yardstick: the essential work of anonid's hot paths and nothing else.

A minimal Starlette app on raw asyncpg, served by uvicorn with one worker, used by ``run.py`` to
show what Python and PostgreSQL themselves cost on this machine:

- ``POST /anonymous``: one ``INSERT … RETURNING``, one ES256 JWT (PyJWT), one ``Set-Cookie``;
- ``GET /me``: one ES256 verification, one primary-key ``SELECT``;
- ``PATCH /me/data``: one verification, one ``UPDATE … RETURNING`` applying the same
  ``jsonb_merge_patch`` SQL function anonid uses.

No CSRF, rate limit, metrics, logging, OpenAPI, session versions or error handling beyond a 401:
that difference is what the benchmark measures. ``YARDSTICK_DATABASE_URL`` names the database;
the schema is created at start.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import asyncpg
import jwt
import orjson
import uuid_utils
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ISSUER = "http://yardstick.local"
AUDIENCE = "anonid"
TTL = 30 * 86400
COOKIE = "anonid_session"
KID = "yardstick"

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id uuid PRIMARY KEY,
    username text UNIQUE,
    is_anonymous boolean NOT NULL,
    data jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE OR REPLACE FUNCTION jsonb_merge_patch(target jsonb, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    result jsonb;
    k text;
    v jsonb;
BEGIN
    IF patch IS NULL OR jsonb_typeof(patch) <> 'object' THEN
        RETURN patch;
    END IF;
    IF target IS NULL OR jsonb_typeof(target) <> 'object' THEN
        result := '{}'::jsonb;
    ELSE
        result := target;
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(patch) LOOP
        IF jsonb_typeof(v) = 'null' THEN
            result := result - k;
        ELSE
            result := result || jsonb_build_object(k, jsonb_merge_patch(result -> k, v));
        END IF;
    END LOOP;
    RETURN result;
END
$$;
"""

COLUMNS = "id, username, is_anonymous, data, created_at, updated_at"
INSERT = (
    "INSERT INTO users (id, username, is_anonymous, data, created_at, updated_at) "
    f"VALUES ($1, $2, true, '{{}}'::jsonb, now(), now()) RETURNING {COLUMNS}"
)
SELECT = f"SELECT {COLUMNS} FROM users WHERE id = $1"
PATCH = (
    "UPDATE users SET data = jsonb_merge_patch(data, $2::jsonb), updated_at = now() "
    "WHERE id = $1 RETURNING data"
)

PRIVATE = ec.generate_private_key(ec.SECP256R1())
PUBLIC = PRIVATE.public_key()
pool: asyncpg.Pool | None = None


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=lambda v: v, decoder=orjson.loads, schema="pg_catalog"
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No session state to undo: these statements set none."""


def _user(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "is_anonymous": row["is_anonymous"],
        "username": row["username"],
        "data": row["data"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


def _json(content: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(content),
        status_code=status,
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )


def _claims(request: Request) -> dict[str, Any] | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        return jwt.decode(token, PUBLIC, algorithms=["ES256"], audience=AUDIENCE, issuer=ISSUER)
    except jwt.PyJWTError:
        return None


async def anonymous(request: Request) -> Response:
    assert pool is not None
    row = await pool.fetchrow(
        INSERT, UUID(str(uuid_utils.uuid7())), "guest-" + secrets.token_hex(6)
    )
    now = int(time.time())
    token = jwt.encode(
        {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": str(row["id"]),
            "iat": now,
            "exp": now + TTL,
            "jti": secrets.token_urlsafe(16),
            "anon": True,
            "sv": 0,
        },
        PRIVATE,
        algorithm="ES256",
        headers={"kid": KID},
    )
    response = _json({"user": _user(row), "expires_in": TTL}, 201)
    response.headers.append(
        "set-cookie", f"{COOKIE}={token}; Max-Age={TTL}; Path=/; HttpOnly; SameSite=Lax"
    )
    return response


async def me(request: Request) -> Response:
    assert pool is not None
    claims = _claims(request)
    if claims is None:
        return _json({"error": "invalid_session"}, 401)
    row = await pool.fetchrow(SELECT, UUID(claims["sub"]))
    if row is None:
        return _json({"error": "invalid_session"}, 401)
    return _json(_user(row))


async def patch_data(request: Request) -> Response:
    assert pool is not None
    claims = _claims(request)
    if claims is None:
        return _json({"error": "invalid_session"}, 401)
    body = await request.body()
    row = await pool.fetchrow(PATCH, UUID(claims["sub"]), body.decode())
    if row is None:
        return _json({"error": "invalid_session"}, 401)
    return _json({"data": row["data"]})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    global pool
    dsn = os.environ["YARDSTICK_DATABASE_URL"]
    setup = await asyncpg.connect(dsn)
    try:
        await setup.execute(SCHEMA)
    finally:
        await setup.close()
    # Released connections are not reset (asyncpg's default costs a round trip per request), as
    # on anonid's hot pool: the same work per request on both sides.
    pool = await asyncpg.create_pool(
        dsn, min_size=10, max_size=20, init=_init_connection, reset=_keep_session
    )
    try:
        yield
    finally:
        await pool.close()


app = Starlette(
    routes=[
        Route("/anonymous", anonymous, methods=["POST"]),
        Route("/me", me, methods=["GET"]),
        Route("/me/data", patch_data, methods=["PATCH"]),
    ],
    lifespan=lifespan,
)
