"""Sign in with a provider in a real browser (Debian's Chromium, driven by Playwright) against a
real ``anonid serve``, the demo storefront and a real OpenID Provider (oidc-provider), each in
its own process on loopback.

A guest favourites two items, clicks "Continue with Example Id", signs in on the provider's own
pages, and comes back registered with the same id and the favourites. A second guest in a fresh
browser favourites another item, signs in with the same identity and is merged into the account.
Screenshots go to ``test-artifacts/journey/``; any console error or failed request fails the test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page, Route, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.oidc_app import events_of, identities_of, user_row
from tests.oidc_support import CLIENT_ID, CLIENT_SECRET, Provider, login_name
from tests.processes import Served, clean_env, free_port
from tests.storefront_support import storefront_process
from tests.test_browser_journey import Journey, expect_favourites, favourite, journey, open_shop

__all__ = ["journey"]

NAME = "example-id"


@dataclass(frozen=True)
class Stack:
    anonid: str
    shop: str
    provider: Provider


@pytest.fixture(scope="module")
def oidc_stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("oidc-journey")
    port, shop_port = free_port(18850, 18875), free_port(18875, 18899)
    anonid, shop = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{shop_port}"
    provider = Provider(
        tmp_path, free_port(18800, 18850), [f"{anonid}/v1/oauth/{NAME}/callback"]
    ).start()
    served = Served(
        tmp_path,
        clean_env(
            ANONID_DATABASE_URL=database_url,
            ANONID_PUBLIC_URL=anonid,
            ANONID_ALLOWED_ORIGINS=shop,
            ANONID_COOKIE_SECURE="false",
            ANONID_CULL_INTERVAL_MINUTES="0",
            ANONID_LOGIN_RATE_LIMIT="1000/minute",
            ANONID_OIDC_PROVIDERS=NAME,
            ANONID_OIDC_EXAMPLE_ID_ISSUER=provider.issuer,
            ANONID_OIDC_EXAMPLE_ID_CLIENT_ID=CLIENT_ID,
            ANONID_OIDC_EXAMPLE_ID_CLIENT_SECRET=CLIENT_SECRET,
        ),
        port,
    )
    try:
        served.wait_ready()
        env = clean_env(STOREFRONT_ANONID_URL=anonid, STOREFRONT_PROVIDERS=NAME)
        with storefront_process(shop_port, env, tmp_path / "storefront.log"):
            yield Stack(anonid, shop, provider)
    finally:
        served.stop()
        provider.stop()


async def _context(journey: Journey, stack: Stack) -> tuple[BrowserContext, Page]:
    """A browser context in which the provider's development pages stay on this machine: their
    web font link (Google Fonts) is answered empty and their missing favicon with no content,
    so nothing leaves loopback and every problem left is anonid's or the shop's."""
    context, page = await journey.context()

    async def empty(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/css", body="")

    async def no_icon(route: Route) -> None:
        await route.fulfill(status=204, body="")

    await context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/]).*"), empty)
    await context.route(f"{stack.provider.issuer}/favicon.ico", no_icon)
    return context, page


async def _me(page: Page, anonid: str) -> dict[str, Any]:
    """GET /v1/me from the page, with the browser's own cookies."""
    return await page.evaluate(  # type: ignore[no-any-return]
        "async (url) => (await fetch(url + '/v1/me', {credentials: 'include'})).json()", anonid
    )


async def _continue_with_provider(page: Page, stack: Stack, login: str, journey: Journey) -> None:
    """Click "Continue with Example Id" and sign in on the provider's own pages."""
    async with page.expect_navigation():
        await page.get_by_role("link", name="Continue with Example Id").click()
    await expect(page).to_have_url(re.compile(re.escape(stack.provider.issuer)))
    await page.locator("input[name=login]").fill(login)
    await page.locator("input[name=password]").fill("any password")
    await journey.shot(page, "provider-login")
    async with page.expect_navigation():
        await page.locator("button[type=submit]").click()
    await expect(page.get_by_role("button", name="Continue")).to_be_visible()
    await journey.shot(page, "provider-consent")
    async with page.expect_navigation(url=re.compile(re.escape(stack.shop))):
        await page.get_by_role("button", name="Continue").click()
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")


async def test_a_guest_continues_with_a_provider_and_keeps_its_favourites_and_a_second_guest_is_merged(
    oidc_stack: Stack, journey: Journey, engine: AsyncEngine
) -> None:
    stack = oidc_stack
    login = login_name("v")

    context, page = await _context(journey, stack)
    await open_shop(page, stack.shop)
    await expect(page.get_by_role("link", name="Continue with Example Id")).to_be_visible()
    await favourite(page, "teapot")
    await favourite(page, "plant")
    await expect(page.locator("#who-label")).to_have_text("Guest")
    guest_id = (await _me(page, stack.anonid))["id"]
    await journey.shot(page, "guest-with-favourites")

    await _continue_with_provider(page, stack, login, journey)
    assert page.url == stack.shop + "/"
    await expect(page.locator("#who-label")).to_have_text("Signed in")
    await expect(page.locator("#who-email")).to_have_text(f" as {login}@example.com")
    await expect_favourites(page, "teapot", "plant")
    await expect(page.locator("#signup")).to_have_count(0)
    me = await _me(page, stack.anonid)
    assert me["id"] == guest_id and me["state"] == "registered"
    await journey.shot(page, "registered-with-favourites")
    await context.close()

    # A second guest, in a fresh browser, signs in with the same identity: merged.
    context, page = await _context(journey, stack)
    await open_shop(page, stack.shop)
    await favourite(page, "socks")
    second_guest = (await _me(page, stack.anonid))["id"]
    await journey.shot(page, "second-guest")
    await _continue_with_provider(page, stack, login, journey)
    await expect(page.locator("#who-label")).to_have_text("Signed in")
    await expect_favourites(page, "teapot", "plant", "socks")
    assert (await _me(page, stack.anonid))["id"] == guest_id
    await journey.shot(page, "merged")
    await context.close()

    assert await user_row(engine, second_guest) is None
    assert [i.subject for i in await identities_of(engine, guest_id)] == [login]
    assert ("user.merged", {"from": second_guest, "into": guest_id}) in await events_of(
        engine, guest_id
    )
    assert journey.problems == []


async def test_cancelling_at_the_provider_comes_back_to_the_shop_with_the_reason(
    oidc_stack: Stack, journey: Journey
) -> None:
    stack = oidc_stack
    context, page = await _context(journey, stack)
    await open_shop(page, stack.shop)
    await favourite(page, "mug")
    async with page.expect_navigation():
        await page.get_by_role("link", name="Continue with Example Id").click()
    await page.locator("input[name=login]").fill(login_name("v"))
    await page.locator("input[name=password]").fill("any password")
    async with page.expect_navigation():
        await page.locator("button[type=submit]").click()
    async with page.expect_navigation(url=re.compile(re.escape(stack.shop))):
        await page.get_by_role("link", name="[ Cancel ]").click()
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    assert page.url == f"{stack.shop}/?error=access_denied"
    await expect(page.locator("#signup-status")).to_have_text(
        "Signing in with the provider was cancelled."
    )
    await expect(page.locator("#who-label")).to_have_text("Guest")
    await expect_favourites(page, "mug")
    await journey.shot(page, "cancelled")
    await context.close()
    assert journey.problems == []
