"""Helpers for the passkey tests over HTTP: ceremonies against an in-process app, with the
software authenticator (``tests.software_authenticator``)."""

from __future__ import annotations

from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import BASE_URL
from tests.software_authenticator import SoftwareAuthenticator

CHALLENGE_ID = "X-Anonid-Challenge-Id"


def authenticator(**kwargs: Any) -> SoftwareAuthenticator:
    """An authenticator used from the test app's origin (``ANONID_PUBLIC_URL``)."""
    return SoftwareAuthenticator(BASE_URL, **kwargs)


async def creation_options(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.post("/v1/me/passkeys/options")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def add_passkey(
    client: httpx.AsyncClient, device: SoftwareAuthenticator, name: str | None = None
) -> httpx.Response:
    """Options, ``create()`` and ``POST /v1/me/passkeys`` with the client's session."""
    credential = device.create(await creation_options(client))
    body: dict[str, Any] = {"credential": credential}
    if name is not None:
        body["name"] = name
    return await client.post("/v1/me/passkeys", json=body)


async def passkey_account(
    client: httpx.AsyncClient, device: SoftwareAuthenticator, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A guest (with ``data``) made registered by its first passkey; the client is signed in."""
    client.cookies.clear()
    assert (await client.post("/v1/anonymous")).status_code == 201
    if data is not None:
        assert (await client.put("/v1/me/data", json=data)).status_code == 200
    r = await add_passkey(client, device)
    assert r.status_code == 201, r.text
    return r.json()["user"]  # type: ignore[no-any-return]


async def request_options(client: httpx.AsyncClient) -> tuple[dict[str, Any], str]:
    """Sign-in options and their challenge id (the client keeps the challenge cookie)."""
    r = await client.post("/v1/login/passkey/options")
    assert r.status_code == 200, r.text
    return r.json(), r.headers[CHALLENGE_ID]


async def sign_in(
    client: httpx.AsyncClient, device: SoftwareAuthenticator, **assertion: Any
) -> httpx.Response:
    """Options, ``get()`` and ``POST /v1/login/passkey`` from the same browser (its cookie)."""
    options, _ = await request_options(client)
    credential = device.get(options, **assertion)
    return await client.post("/v1/login/passkey", json={"credential": credential})


async def stored_count(engine: AsyncEngine, user_id: str) -> list[int]:
    async with engine.connect() as conn:
        rows = await conn.scalars(
            sa.text("SELECT sign_count FROM passkeys WHERE user_id = :u ORDER BY created_at"),
            {"u": user_id},
        )
        return list(rows)
