"""Fixtures shared by the provider sign-in tests: the provider, anonid configured for it, a
browser-like client, and reads of what the database holds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import BASE_URL, make_settings, running_app
from tests.oidc_support import CLIENT_ID, CLIENT_SECRET, Provider, drive
from tests.processes import free_port

# op: TRUST_EMAIL off; trusted: on; op-post: form_post. One provider and client behind all three,
# so one login is three different identities (identities are per provider name).
PROVIDERS = ("op", "trusted", "op-post")
SHOP = "https://shop.test"


def oidc_overrides(provider: Provider, **extra: Any) -> dict[str, Any]:
    oidc: dict[str, str] = {}
    for name in PROVIDERS:
        key = name.replace("-", "_")
        oidc[f"{key}_issuer"] = provider.issuer
        oidc[f"{key}_client_id"] = CLIENT_ID
        oidc[f"{key}_client_secret"] = CLIENT_SECRET
    oidc["trusted_trust_email"] = "true"
    oidc["op_post_response_mode"] = "form_post"
    return {
        "oidc_providers": ",".join(PROVIDERS),
        "oidc": oidc,
        "allowed_origins": SHOP,
        "oidc_jwks_refresh_seconds": 0,
        **extra,
    }


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    port = free_port(18800, 18850)
    redirect_uris = [f"{BASE_URL}/v1/oauth/{name}/callback" for name in PROVIDERS]
    running = Provider(tmp_path_factory.mktemp("oidc"), port, redirect_uris).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
async def oidc_app(database_url: str, provider: Provider) -> AsyncIterator[FastAPI]:
    async with running_app(make_settings(database_url, **oidc_overrides(provider))) as app:
        yield app


def browser(app: FastAPI) -> httpx.AsyncClient:
    """A client that reaches anonid in-process and everything else (the provider) over HTTP,
    keeping cookies per host as a browser does."""
    return httpx.AsyncClient(
        mounts={BASE_URL: httpx.ASGITransport(app=app)}, base_url=BASE_URL, timeout=30
    )


async def sign_in_with(
    client: httpx.AsyncClient,
    login: str,
    provider: str = "op",
    return_to: str | None = None,
    **kw: Any,
) -> httpx.Response:
    """The whole browser flow: authorize, the provider's pages, the callback's answer."""
    params = {"return_to": return_to} if return_to else {}
    first = await client.get(f"/v1/oauth/{provider}/authorize", params=params)
    assert first.status_code == 302, first.text
    return await drive(client, first, login, **kw)


async def new_guest(
    client: httpx.AsyncClient, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    client.cookies.clear()
    r = await client.post("/v1/anonymous")
    assert r.status_code == 201, r.text
    if data is not None:
        r = await client.put("/v1/me/data", json=data)
        assert r.status_code == 200, r.text
    return (await client.get("/v1/me")).json()  # type: ignore[no-any-return]


async def identities_of(engine: AsyncEngine, user_id: str) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            await conn.execute(
                sa.text(
                    "SELECT provider, subject, email, email_verified FROM identities "
                    "WHERE user_id = :id ORDER BY created_at"
                ),
                {"id": user_id},
            )
        )


async def events_of(engine: AsyncEngine, user_id: str) -> list[tuple[str, dict[str, Any]]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT type, payload FROM events WHERE user_id = :id ORDER BY created_at, id"),
            {"id": user_id},
        )
        return [(r.type, r.payload) for r in rows]


async def user_row(engine: AsyncEngine, user_id: str) -> Any:
    async with engine.connect() as conn:
        return (
            await conn.execute(
                sa.text(
                    "SELECT id, is_anonymous, email, username, data, session_version, converted_at "
                    "FROM users WHERE id = :id"
                ),
                {"id": user_id},
            )
        ).first()
