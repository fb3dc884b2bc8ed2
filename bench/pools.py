"""Pre-created sessions for the GET and PATCH runs (and accounts for the login and email runs)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

CONCURRENCY = 16


async def _gather(
    count: int, make: Callable[[httpx.AsyncClient, int], Awaitable[str]], base: str
) -> list[str]:
    limit = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, timeout=30.0) as client:

        async def one(i: int) -> str:
            async with limit:
                return await make(client, i)

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def anonid_tokens(base: str, count: int) -> list[str]:
    """Anonymous sessions from ``POST /v1/anonymous`` (token in the body on request)."""

    async def make(client: httpx.AsyncClient, i: int) -> str:
        response = await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})
        response.raise_for_status()
        return str(response.json()["access_token"])

    return await _gather(count, make, base)


async def anonid_refresh_tokens(base: str, count: int) -> list[str]:
    """Refresh tokens of new anonymous sessions (bearer mode: the tokens in the body)."""

    async def make(client: httpx.AsyncClient, i: int) -> str:
        response = await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})
        response.raise_for_status()
        return str(response.json()["refresh_token"])

    return await _gather(count, make, base)


async def yardstick_tokens(base: str, count: int) -> list[str]:
    async def make(client: httpx.AsyncClient, i: int) -> str:
        response = await client.post("/anonymous")
        response.raise_for_status()
        return str(response.cookies["anonid_session"])

    return await _gather(count, make, base)


async def fastapi_users_tokens(base: str, count: int) -> list[str]:
    """Registered users (fastapi-users has no anonymous accounts) logged in for bearer tokens."""

    async def make(client: httpx.AsyncClient, i: int) -> str:
        email = f"bench{i}@example.com"
        password = f"bench-password-{i}"
        response = await client.post("/auth/register", json={"email": email, "password": password})
        response.raise_for_status()
        response = await client.post(
            "/auth/jwt/login", data={"username": email, "password": password}
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    return await _gather(count, make, base)


def write_tokens(path: Path, tokens: list[str]) -> Path:
    path.write_text("\n".join(tokens) + "\n")
    return path
