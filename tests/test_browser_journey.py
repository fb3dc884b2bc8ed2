"""The whole journey in a real browser: Debian's Chromium, driven by Playwright, against a real
``anonid serve`` and the demo storefront, each in its own process.

A guest favourites two items, signs up, sets a password from the emailed link (read from
``/dev/mail``), comes back signed in with the favourites, logs out, and logs in again from a fresh
browser whose new guest favourite is merged into the account. Every step leaves a screenshot in
``test-artifacts/journey/``; any console error or failed request fails the test.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    Request,
    Response,
    async_playwright,
    expect,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.browser import ensure_chromium
from tests.processes import Served, clean_env, free_port
from tests.storefront_support import storefront_process
from tests.tokens import claims_for, sign

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "journey"
PASSWORD = "plum-harbour-lantern-42"
STEP_TIMEOUT_MS = 20_000


@dataclass(frozen=True)
class Stack:
    anonid: str
    shop: str


def _stack(
    database_url: str, tmp_path: Path, anonid_env: dict[str, str], shop_env: dict[str, str]
) -> Iterator[Stack]:
    port = free_port(18400, 18450)
    shop_port = free_port(18450, 18499)
    anonid, shop = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{shop_port}"
    served = Served(
        tmp_path,
        clean_env(
            ANONID_DATABASE_URL=database_url,
            ANONID_PUBLIC_URL=anonid,
            ANONID_ALLOWED_ORIGINS=shop,
            ANONID_COOKIE_SECURE="false",
            ANONID_CULL_INTERVAL_MINUTES="0",
            **anonid_env,
        ),
        port,
    )
    try:
        served.wait_ready()
        env = clean_env(
            STOREFRONT_ANONID_URL=anonid, STOREFRONT_INBOX_URL=f"{anonid}/dev/mail", **shop_env
        )
        with storefront_process(shop_port, env, tmp_path / "storefront.log"):
            yield Stack(anonid, shop)
    finally:
        served.stop()


@pytest.fixture(scope="module")
def stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """anonid (the test database, local mail catcher, in-process worker) and the storefront."""
    yield from _stack(database_url, tmp_path_factory.mktemp("journey"), {}, {})


SHORT_TTL_SECONDS = 3


@pytest.fixture(scope="module")
def short_stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The same, with access tokens that expire after a few seconds (and a storefront that
    allows no leeway), so a test sees them expire without waiting minutes."""
    yield from _stack(
        database_url,
        tmp_path_factory.mktemp("journey-short"),
        {"ANONID_ACCESS_TOKEN_TTL_MINUTES": str(SHORT_TTL_SECONDS / 60)},
        {"STOREFRONT_LEEWAY_SECONDS": "0"},
    )


class Journey:
    """Screenshots per step, and every problem the browser reports."""

    def __init__(self, browser: Browser, name: str) -> None:
        self.browser = browser
        self.name = name
        self.problems: list[str] = []
        self.step = 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    async def context(self) -> tuple[BrowserContext, Page]:
        context = await self.browser.new_context(viewport={"width": 1100, "height": 820})
        context.set_default_timeout(STEP_TIMEOUT_MS)
        page = await context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)
        return context, page

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.problems.append(f"console error: {message.text} ({message.location})")

    def _failed(self, request: Request) -> None:
        self.problems.append(f"request failed: {request.method} {request.url} {request.failure}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.problems.append(
                f"HTTP {response.status}: {response.request.method} {response.url}"
            )

    async def shot(self, page: Page, name: str) -> None:
        self.step += 1
        path = ARTIFACTS / f"{self.name}-{self.step:02d}-{name}.png"
        await page.screenshot(path=path, full_page=True)


@pytest.fixture
async def journey(request: pytest.FixtureRequest) -> AsyncIterator[Journey]:
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=ensure_chromium(), headless=True, args=CHROMIUM_ARGS
        )
        name = request.node.name.removeprefix("test_")[:40]
        for old in ARTIFACTS.glob(f"{name}-*.png"):
            old.unlink()
        journey = Journey(browser, name)
        try:
            yield journey
        finally:
            # Shown with a failure at any step, not only at the final assertion.
            for problem in journey.problems:
                print(problem)
            await browser.close()


async def open_shop(page: Page, url: str) -> None:
    await page.goto(url)
    # The page has loaded the visitor's data from anonid (so no request is cut off by leaving).
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")


def fav(page: Page, product: str) -> Locator:
    return page.locator(f'#products li[data-product="{product}"] button.fav')


async def favourite(page: Page, product: str) -> None:
    await fav(page, product).click()
    await expect(fav(page, product)).to_have_attribute("aria-pressed", "true")


async def expect_favourites(page: Page, *products: str) -> None:
    for button in await page.locator("#products button.fav").all():
        product = await button.get_attribute("data-product")
        pressed = "true" if product in products else "false"
        await expect(button).to_have_attribute("aria-pressed", pressed)


async def setup_link_for(page: Page, inbox: str, email: str) -> str:
    """The password-setup link from the newest email to ``email`` in anonid's /dev/mail."""
    link = page.locator('a[href*="/account/setup?token="]').first
    for _ in range(60):
        await page.goto(inbox)
        if await page.get_by_text(email).count() and await link.count():
            href = await link.get_attribute("href")
            assert href is not None
            return href
        await page.wait_for_timeout(500)
    raise AssertionError(f"no setup link for {email} at {inbox}")


async def code_for(page: Page, inbox: str, email: str) -> str:
    """The six-digit code from the newest email to ``email`` in anonid's /dev/mail."""
    mail = page.locator("article").filter(has=page.locator("dd.to", has_text=email)).first
    for _ in range(60):
        await page.goto(inbox)
        if await mail.count():
            match = re.search(r"^ {4}(\d{6})$", await mail.locator("pre").inner_text(), re.M)
            assert match is not None
            return match.group(1)
        await page.wait_for_timeout(500)
    raise AssertionError(f"no code for {email} at {inbox}")


async def guest_with_favourites(journey: Journey, shop: str) -> tuple[BrowserContext, Page]:
    """A new browser whose guest favourites the teapot and the plant."""
    context, page = await journey.context()
    await open_shop(page, shop)
    await favourite(page, "teapot")
    await favourite(page, "plant")
    await expect(page.locator("#who-label")).to_have_text("Guest")
    return context, page


async def expect_signed_in_with_favourites(page: Page, email: str) -> None:
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#who-label")).to_have_text("Signed in")
    await expect(page.locator("#who-email")).to_have_text(f" as {email}")
    await expect_favourites(page, "teapot", "plant")
    await expect(page.locator("#signup")).to_have_count(0)


async def test_a_guest_saves_the_favourites_with_the_emailed_code(
    stack: Stack, journey: Journey
) -> None:
    email = f"code-{secrets.token_hex(4)}@example.com"
    context, page = await guest_with_favourites(journey, stack.shop)
    await page.fill("#signup-email", email)
    await page.click("#signup-code")
    await expect(page.locator("#signup-status")).to_contain_text(email)
    await expect(page.locator("#code-input")).to_be_visible()
    await journey.shot(page, "code-requested")

    # The code is read in another tab; the shop's tab keeps its guest and types it in.
    inbox = await context.new_page()
    code = await code_for(inbox, f"{stack.anonid}/dev/mail", email)
    await inbox.close()
    await page.fill("#code-input", code)
    async with page.expect_navigation():
        await page.get_by_role("button", name="Save with this code").click()
    await expect_signed_in_with_favourites(page, email)
    await journey.shot(page, "saved-by-code")
    # No password was chosen: the account signs in by email.
    me = await page.evaluate(
        "async (u) => (await fetch(u, {credentials: 'include'})).json()", f"{stack.anonid}/v1/me"
    )
    assert me["methods"] == ["email"] and me["email"] == email
    await context.close()
    assert journey.problems == []


async def test_a_guest_saves_the_favourites_with_the_link_and_no_password(
    stack: Stack, journey: Journey
) -> None:
    email = f"nopass-{secrets.token_hex(4)}@example.com"
    context, page = await guest_with_favourites(journey, stack.shop)
    await page.fill("#signup-email", email)
    await page.click("#signup-link")
    await expect(page.locator("#signup-status")).to_contain_text(email)

    link = await setup_link_for(page, f"{stack.anonid}/dev/mail", email)
    await page.goto(link)
    await journey.shot(page, "setup-page")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Save without a password").click()
    await expect(page.get_by_role("heading")).to_have_text("Your account is saved")
    await journey.shot(page, "saved-without-password")
    async with page.expect_navigation():
        await page.get_by_role("link", name="Continue").click()
    assert page.url == stack.shop + "/"
    await expect_signed_in_with_favourites(page, email)
    await journey.shot(page, "signed-in-by-link")
    await context.close()
    assert journey.problems == []


async def test_guest_favourites_survive_sign_up_logout_and_merge_on_login(
    stack: Stack, journey: Journey
) -> None:
    email = f"journey-{secrets.token_hex(4)}@example.com"

    # A guest favourites two items; the first creates the anonymous account.
    guest, page = await journey.context()
    await open_shop(page, stack.shop)
    await expect(page.locator("#who-label")).to_have_text("Not signed in")
    await journey.shot(page, "products")
    await favourite(page, "teapot")
    await favourite(page, "plant")
    await expect(page.locator("#who-label")).to_have_text("Guest")
    await journey.shot(page, "two-favourites")

    # Reloading shows the guest state, verified by the storefront's backend from the cookie.
    await open_shop(page, stack.shop)
    await expect(page.locator("#who-label")).to_have_text("Guest")
    await expect_favourites(page, "teapot", "plant")
    await journey.shot(page, "reloaded-as-guest")

    await open_shop(page, stack.shop + "/favourites")
    visible = page.locator("#favourites li.card:visible")
    await expect(visible).to_have_count(2)
    await journey.shot(page, "favourites-page")

    # "Save your favourites": the conversion starts and a link is emailed.
    await page.fill("#signup-email", email)
    await page.click("#signup-form button[type=submit]")
    await expect(page.locator("#signup-status")).to_contain_text(email)
    await journey.shot(page, "sign-up-requested")

    link = await setup_link_for(page, f"{stack.anonid}/dev/mail", email)
    assert link.startswith(f"{stack.anonid}/account/setup?token=")
    await journey.shot(page, "inbox")

    # The hosted page: choose a password.
    await page.goto(link)
    passwords = page.locator("input[type=password]")
    await expect(passwords.first).to_be_visible()
    for field in await passwords.all():
        await field.fill(PASSWORD)
    await journey.shot(page, "setup-page")
    async with page.expect_navigation():
        await page.locator("form button[type=submit], form input[type=submit]").first.click()
    await journey.shot(page, "password-set")

    # "Continue" leads back to the storefront: signed in, favourites kept.
    async with page.expect_navigation():
        await page.get_by_role("link", name="Continue").click()
    assert page.url == stack.shop + "/"
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#who-label")).to_have_text("Signed in")
    await expect(page.locator("#who-email")).to_have_text(f" as {email}")
    await expect_favourites(page, "teapot", "plant")
    await expect(page.locator("#signup")).to_have_count(0)
    await journey.shot(page, "signed-in-with-favourites")

    # Log out: the cookie is gone, so is the session.
    async with page.expect_navigation():
        await page.click("#logout")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#who-label")).to_have_text("Not signed in")
    await expect_favourites(page)
    await journey.shot(page, "logged-out")
    await guest.close()

    # A fresh browser: a new guest favourite, then log in on anonid's hosted page.
    fresh, page = await journey.context()
    await open_shop(page, stack.shop)
    await favourite(page, "socks")
    await open_shop(page, stack.shop)
    await expect(page.locator("#who-label")).to_have_text("Guest")
    await journey.shot(page, "new-guest-favourite")

    await page.click("#login")
    await expect(page).to_have_url(re.compile(re.escape(f"{stack.anonid}/account/login")))
    await page.locator("input[name=email]").fill(email)
    await page.locator("input[type=password]").fill(PASSWORD)
    await journey.shot(page, "login-page")
    async with page.expect_navigation():
        await page.locator("form button[type=submit], form input[type=submit]").first.click()
    await journey.shot(page, "logged-in")

    # The guest's favourite was merged into the account's.
    async with page.expect_navigation():
        await page.get_by_role("link", name="Continue").click()
    assert page.url == stack.shop + "/"
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#who-label")).to_have_text("Signed in")
    await expect_favourites(page, "teapot", "plant", "socks")
    await open_shop(page, stack.shop + "/favourites")
    await expect(page.locator("#favourites li.card:visible")).to_have_count(3)
    await journey.shot(page, "merged-favourites")
    await fresh.close()

    assert journey.problems == []


def _claims(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


async def test_a_guest_is_kept_across_access_token_expiry_by_the_storefront_and_by_anonid(
    short_stack: Stack, journey: Journey
) -> None:
    """The storefront's backend renews an expired access cookie server-side before rendering;
    anonid renews one transparently when the page's script calls it. No JavaScript handles
    tokens, no request fails, and the guest stays the same person."""
    context, page = await journey.context()
    await open_shop(page, short_stack.shop)
    await favourite(page, "teapot")
    await expect(page.locator("#who-label")).to_have_text("Guest")
    first = {c["name"]: c["value"] for c in await context.cookies(short_stack.anonid)}
    guest = _claims(first["anonid_session"])

    await page.wait_for_timeout(SHORT_TTL_SECONDS * 1000 + 1200)  # the access token expires
    response = await page.goto(short_stack.shop)
    assert response is not None
    renewed = await response.header_value("set-cookie")
    assert renewed is not None and "anonid_session=" in renewed and "anonid_refresh=" in renewed
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#who-label")).to_have_text("Guest")
    await expect_favourites(page, "teapot")
    await journey.shot(page, "renewed-by-the-storefront")

    await page.wait_for_timeout(SHORT_TTL_SECONDS * 1000 + 1200)  # and again
    await favourite(page, "plant")  # the script's PATCH to anonid carries the expired cookie
    await open_shop(page, short_stack.shop)
    await expect_favourites(page, "teapot", "plant")
    await journey.shot(page, "renewed-by-anonid")
    last = {c["name"]: c["value"] for c in await context.cookies(short_stack.anonid)}
    assert last["anonid_refresh"] != first["anonid_refresh"]
    now = _claims(last["anonid_session"])
    assert now["sub"] == guest["sub"] and now["sid"] == guest["sid"]
    await context.close()
    assert journey.problems == []


async def test_a_session_anonid_no_longer_knows_becomes_a_fresh_guest(
    stack: Stack, journey: Journey, engine: AsyncEngine
) -> None:
    # Validly signed, so the storefront's offline check passes; but the user does not exist.
    ghost = str(uuid.uuid4())
    token = await sign(engine, claims_for(ghost, iss=stack.anonid))
    context, page = await journey.context()
    await context.add_cookies([{"name": "anonid_session", "value": token, "url": stack.anonid}])
    await open_shop(page, stack.shop)
    await expect(page.locator("body")).to_have_attribute("data-session", "guest")
    await expect(page.locator("#who-label")).to_have_text("Not signed in")
    await journey.shot(page, "stale-session")

    await favourite(page, "mug")
    await open_shop(page, stack.shop)
    await expect(page.locator("#who-label")).to_have_text("Guest")
    await expect_favourites(page, "mug")
    await journey.shot(page, "fresh-guest")
    cookies = {c["name"]: c["value"] for c in await context.cookies(stack.anonid)}
    assert cookies["anonid_session"] != token
    await context.close()

    # anonid's 401 for the unknown session (which the browser logs) is the only problem.
    me = f"{stack.anonid}/v1/me"
    assert [p for p in journey.problems if me not in p] == []
    assert f"HTTP 401: GET {me}" in journey.problems
