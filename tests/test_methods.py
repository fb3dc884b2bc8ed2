"""``methods`` in the user object (CONTRACT §5): the ways a registered account can sign in, read
in the same statement as the user (``GET /v1/me`` stays one round trip)."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.account_support import bare_client, new_guest, register, register_without_password
from tests.conftest import AppFactory
from tests.lifecycle_support import ADMIN_KEY, admin_headers


async def _link_identity(engine: AsyncEngine, user_id: str, provider: str, subject: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO identities (id, user_id, provider, subject, created_at)"
                " VALUES (gen_random_uuid(), :u, :p, :s, clock_timestamp())"
            ),
            {"u": user_id, "p": provider, "s": subject},
        )


async def test_methods_list_how_an_account_signs_in_and_a_guest_has_none(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        guest = await new_guest(c)
        assert guest["methods"] == []
        assert (await c.get("/v1/me")).json()["methods"] == []
        account = await register(c, engine)
        assert (await c.get("/v1/me")).json()["methods"] == ["password", "email"]
    async with bare_client(app) as c:
        passwordless = await register_without_password(c, engine)
        assert passwordless["methods"] == ["email"]
        await _link_identity(engine, passwordless["id"], "work", "w-1")
        await _link_identity(engine, passwordless["id"], "home", "h-1")
        await _link_identity(engine, passwordless["id"], "work", "w-2")  # one provider, once
        me = (await c.get("/v1/me")).json()
        assert me["methods"] == ["email", "oidc:work", "oidc:home"]
        async with engine.begin() as conn:
            for n in range(2):  # two passkeys, one way to sign in
                await conn.execute(
                    sa.text(
                        "INSERT INTO passkeys (id, user_id, credential_id, public_key, name)"
                        " VALUES (gen_random_uuid(), :u, :c, '\\x00', 'key')"
                    ),
                    {"u": passwordless["id"], "c": f"cred-{passwordless['id']}-{n}".encode()},
                )
        me = (await c.get("/v1/me")).json()
        assert me["methods"] == ["email", "passkey", "oidc:work", "oidc:home"]
    assert account["methods"] == ["password", "email"]


async def test_the_admin_api_shows_methods_too(app_with: AppFactory, engine: AsyncEngine) -> None:
    app, client = await app_with(admin_api_key=ADMIN_KEY)
    async with bare_client(app) as c:
        account = await register_without_password(c, engine)
    r = await client.get(f"/v1/admin/users/{account['id']}", headers=admin_headers())
    assert r.status_code == 200 and r.json()["methods"] == ["email"]
