"""Helpers for the conversion, credential and page tests: guests, links read from the outbox."""

from __future__ import annotations

import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.lifecycle.addresses import email_key
from tests.conftest import BASE_URL

PASSWORD = "correct horse battery staple"
LINK = re.compile(r"https?://\S+")


def fresh_email(tag: str = "user") -> str:
    return f"{tag}-{secrets.token_hex(6)}@example.org"


async def new_guest(client: httpx.AsyncClient) -> dict[str, Any]:
    """A new anonymous account; the client keeps its cookie."""
    client.cookies.clear()
    r = await client.post("/v1/anonymous")
    assert r.status_code == 201, r.text
    return r.json()["user"]  # type: ignore[no-any-return]


async def outbox_emails(
    engine: AsyncEngine, to: str, kind: str | None = None
) -> list[dict[str, Any]]:
    """Queued emails to an address, in any spelling (oldest first), as the worker would send
    them: outbox rows are addressed to the normal form."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT payload FROM outbox WHERE kind = 'email' AND payload->>'to' = :to"
                " AND (CAST(:kind AS text) IS NULL OR payload->>'email_kind' = :kind) ORDER BY id"
            ),
            {"to": email_key(to), "kind": kind},
        )
        return [r.payload for r in rows]


def link_in(email: dict[str, Any]) -> str:
    match = LINK.search(email["text"])
    assert match is not None, email["text"]
    return match.group(0)


def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


async def last_token(engine: AsyncEngine, to: str, kind: str) -> str:
    emails = await outbox_emails(engine, to, kind)
    assert emails, f"no {kind} email to {to}"
    return token_of(link_in(emails[-1]))


async def request_conversion(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post("/v1/me/conversion", json={"email": email})


async def register(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    email: str | None = None,
    password: str = PASSWORD,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A registered account made the way a person makes one; the client ends up logged in."""
    email = email or fresh_email()
    await new_guest(client)
    if data is not None:
        r = await client.put("/v1/me/data", json=data)
        assert r.status_code == 200, r.text
    r = await request_conversion(client, email)
    assert r.status_code == 202, r.text
    token = await last_token(engine, email, "conversion_setup")
    r = await client.post("/v1/password-setup", json={"token": token, "password": password})
    assert r.status_code == 200, r.text
    return {"email": email, "password": password, **r.json()["user"]}


def bare_client(app: Any, **kwargs: Any) -> httpx.AsyncClient:
    """Another browser: no cookies shared with any other client."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, **kwargs), base_url=BASE_URL, timeout=30
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# One-time email codes: the six digits stand on a line of their own in the text part.
CODE_LINE = re.compile(r"^ {4}(\d{6})$", re.MULTILINE)


def code_in(email: dict[str, Any]) -> str:
    match = CODE_LINE.search(email["text"])
    assert match is not None, email["text"]
    return match.group(1)


async def last_code(engine: AsyncEngine, to: str, kind: str) -> tuple[str, str]:
    """The link token and the code of the newest ``kind`` email to ``to``."""
    emails = await outbox_emails(engine, to, kind)
    assert emails, f"no {kind} email to {to}"
    return token_of(link_in(emails[-1])), code_in(emails[-1])


def wrong(code: str) -> str:
    """Another six-digit code."""
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def register_without_password(
    client: httpx.AsyncClient, engine: AsyncEngine, email: str | None = None
) -> dict[str, Any]:
    """A registered account made with the conversion email's code: no password; the client ends
    up logged in."""
    email = email or fresh_email("nopass")
    await new_guest(client)
    r = await request_conversion(client, email)
    assert r.status_code == 202, r.text
    _, code = await last_code(engine, email, "conversion_setup")
    r = await client.post("/v1/me/conversion/verify", json={"code": code})
    assert r.status_code == 200, r.text
    return {"email": email, **r.json()["user"]}


async def ask_login_code(client: httpx.AsyncClient, engine: AsyncEngine, email: str) -> tuple:
    """``POST /v1/login/email``, then the link token and the code of the email it sent."""
    r = await client.post("/v1/login/email", json={"email": email})
    assert r.status_code == 202, r.text
    return await last_code(engine, email, "login_code")


async def expire_links(engine: AsyncEngine, user_id: str, purpose: str) -> None:
    """Make the user's links (and their codes) of ``purpose`` a second past their expiry."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE link_tokens SET expires_at = now() - interval '1 second',"
                " code_expires_at = now() - interval '1 second'"
                " WHERE user_id = :id AND purpose = :purpose"
            ),
            {"id": user_id, "purpose": purpose},
        )
