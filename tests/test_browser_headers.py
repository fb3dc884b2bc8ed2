"""What real browsers send and ask for, found by the browser journey and pinned here.

Chromium posts a hosted page's form with ``Origin: null`` (the pages send
``Referrer-Policy: no-referrer``) and asks every page for an icon.
"""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.account_support import PASSWORD, bare_client, register
from tests.conftest import BASE_URL, AppFactory

MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


async def _guest(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/anonymous")
    assert r.status_code == 201
    assert client.cookies.get("anonid_session")


async def test_origin_null_from_our_own_page_passes_the_csrf_guard(
    client: httpx.AsyncClient,
) -> None:
    await _guest(client)
    r = await client.patch(
        "/v1/me/data",
        content=b'{"seen": true}',
        headers={**MERGE_PATCH, "Origin": "null", "Sec-Fetch-Site": "same-origin"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"seen": True}


@pytest.mark.parametrize("fetch_site", ["cross-site", "same-site", "none", None])
async def test_origin_null_from_anywhere_else_is_refused(
    client: httpx.AsyncClient, fetch_site: str | None
) -> None:
    await _guest(client)
    headers = {**MERGE_PATCH, "Origin": "null"}
    if fetch_site is not None:
        headers["Sec-Fetch-Site"] = fetch_site
    r = await client.patch("/v1/me/data", content=b'{"seen": true}', headers=headers)
    assert r.status_code == 403
    assert r.json()["error"] == "csrf_rejected"


async def test_hosted_pages_declare_an_inline_icon_their_policy_allows(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/account/login")
    assert r.status_code == 200
    assert '<link rel="icon" href="data:,">' in r.text
    policy = r.headers["content-security-policy"]
    assert re.search(r"(^|;)\s*img-src data:\s*(;|$)", policy), policy
    assert "default-src 'none'" in policy


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [
        ("https://shop.example,https://m.shop.example", "https://shop.example/"),
        (None, BASE_URL + "/"),
    ],
)
async def test_hosted_login_continues_to_the_app_the_visitor_came_from(
    app_with: AppFactory, engine: AsyncEngine, allowed: str | None, expected: str
) -> None:
    app, c = await app_with(allowed_origins=allowed)
    account = await register(c, engine)
    async with bare_client(app) as browser:
        page = await browser.get("/account/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        done = await browser.post(
            "/account/login",
            data={"csrf": csrf.group(1), "email": account["email"], "password": PASSWORD},
        )
    assert done.status_code == 200, done.text
    assert f'<a href="{expected}">Continue</a>' in done.text
