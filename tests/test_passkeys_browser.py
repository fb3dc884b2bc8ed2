"""Passkeys in a real browser: Debian's Chromium driven by Playwright, with Chromium's virtual
authenticator (DevTools ``WebAuthn`` domain: CTAP2, internal transport, resident keys, user
verification), against a real ``anonid serve`` and the demo storefront on ``localhost`` (browsers
refuse an IP address as the RP id).

A guest favourites two items and clicks "Save with a passkey" in the storefront: it is registered
in place with its id and favourites. It logs out. A new browser context, whose authenticator
holds the same credential (exported with ``WebAuthn.getCredentials``, imported with
``WebAuthn.addCredential``), favourites another item as a new guest and signs in with the passkey
on anonid's login page: the guest is merged into the account. Then the refusals, with assertions
the browser made: a cloned authenticator behind the stored counter, a challenge used twice, an
assertion made on another origin or for another RP id. Screenshots go to
``test-artifacts/journey/``; any console error or failed request fails the journeys.
"""

from __future__ import annotations

import base64
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import BrowserContext, CDPSession, Page, Route, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.account_support import fresh_email
from tests.conftest import AppFactory
from tests.npm_support import axe_source
from tests.oidc_app import events_of, user_row
from tests.passkey_support import CHALLENGE_ID, stored_count
from tests.processes import Served, clean_env, free_port
from tests.storefront_support import storefront_process
from tests.test_browser_journey import (
    Journey,
    expect_favourites,
    favourite,
    journey,
    open_shop,
    setup_link_for,
)
from tests.test_console_browser import _violations

__all__ = ["journey"]

SCRIPT = (Path(__file__).resolve().parent.parent / "app" / "static" / "passkeys.js").read_text()
# Origins no server listens on: Playwright answers them, so a page there is a real origin that
# anonid does not know.
FOREIGN = "http://localhost:18999"
EVIL = "http://evil.localhost:18999"
BLANK = "<!doctype html><html lang=en><title>elsewhere</title><h1>elsewhere</h1></html>"


@dataclass(frozen=True)
class Stack:
    anonid: str
    shop: str


@pytest.fixture(scope="module")
def passkey_stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp_path = tmp_path_factory.mktemp("passkeys")
    port, shop_port = free_port(18900, 18950), free_port(18950, 18998)
    anonid, shop = f"http://localhost:{port}", f"http://localhost:{shop_port}"
    served = Served(
        tmp_path,
        clean_env(
            ANONID_DATABASE_URL=database_url,
            ANONID_PUBLIC_URL=anonid,
            ANONID_ALLOWED_ORIGINS=shop,
            ANONID_COOKIE_SECURE="false",
            ANONID_CULL_INTERVAL_MINUTES="0",
            ANONID_LOGIN_RATE_LIMIT="1000/minute",
        ),
        port,
    )
    try:
        served.wait_ready()
        env = clean_env(STOREFRONT_ANONID_URL=anonid, STOREFRONT_INBOX_URL=f"{anonid}/dev/mail")
        with storefront_process(shop_port, env, tmp_path / "storefront.log"):
            yield Stack(anonid, shop)
    finally:
        served.stop()


class Authenticator:
    """Chromium's virtual authenticator on one page: a platform passkey provider (CTAP2,
    internal, resident keys, user verification that succeeds, presence simulated)."""

    def __init__(self, cdp: CDPSession, authenticator_id: str) -> None:
        self.cdp = cdp
        self.id = authenticator_id

    @classmethod
    async def on(cls, context: BrowserContext, page: Page) -> Authenticator:
        cdp = await context.new_cdp_session(page)
        await cdp.send("WebAuthn.enable", {"enableUI": False})
        added = await cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                    "automaticPresenceSimulation": True,
                }
            },
        )
        return cls(cdp, added["authenticatorId"])

    async def credentials(self) -> list[dict[str, Any]]:
        found = await self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.id})
        return found["credentials"]  # type: ignore[no-any-return]

    async def remove(self) -> None:
        await self.cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": self.id})

    async def add(self, credential: dict[str, Any]) -> None:
        await self.cdp.send(
            "WebAuthn.addCredential", {"authenticatorId": self.id, "credential": credential}
        )


async def _me(page: Page, anonid: str) -> dict[str, Any]:
    """GET /v1/me from the page, with the browser's own cookies."""
    return await page.evaluate(  # type: ignore[no-any-return]
        "async (url) => (await fetch(url + '/v1/me', {credentials: 'include'})).json()", anonid
    )


def _user_handle(user_id: str) -> str:
    """A user id as the DevTools protocol shows a user handle (base64 of the 16 bytes)."""
    return base64.b64encode(uuid.UUID(user_id).bytes).decode()


async def test_a_guest_saves_with_a_passkey_and_signs_in_with_it_in_another_browser_merging_a_guest(
    passkey_stack: Stack, journey: Journey, engine: AsyncEngine
) -> None:
    stack = passkey_stack
    context, page = await journey.context()
    device = await Authenticator.on(context, page)
    await open_shop(page, stack.shop)
    await favourite(page, "teapot")
    await favourite(page, "plant")
    await expect(page.locator("#who-label")).to_have_text("Guest")
    guest_id = (await _me(page, stack.anonid))["id"]
    await journey.shot(page, "passkey-guest")

    # One touch: the guest becomes registered in place, no address needed.
    save = page.get_by_role("button", name="Save with a passkey")
    await expect(save).to_be_visible()
    async with page.expect_navigation():
        await save.click()
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#who-label")).to_have_text("Signed in")
    await expect_favourites(page, "teapot", "plant")
    me = await _me(page, stack.anonid)
    assert me["id"] == guest_id and me["state"] == "registered" and me["email"] is None
    await journey.shot(page, "passkey-saved")
    [credential] = await device.credentials()
    assert credential["isResidentCredential"] is True and credential["rpId"] == "localhost"
    assert credential["userHandle"] == _user_handle(guest_id)

    # Log out; the passkey is the way back.
    async with page.expect_navigation():
        await page.click("#logout")
    await expect(page.locator("#who-label")).to_have_text("Not signed in")
    await context.close()

    # Another browser, the same passkey (a synced one), and a new guest there.
    other, page = await journey.context()
    synced = await Authenticator.on(other, page)
    await synced.add(credential)
    await open_shop(page, stack.shop)
    await favourite(page, "socks")
    second_guest = (await _me(page, stack.anonid))["id"]
    await page.click("#login")
    await expect(page).to_have_url(re.compile(re.escape(f"{stack.anonid}/account/login")))
    sign_in = page.get_by_role("button", name="Sign in with a passkey")
    await expect(sign_in).to_be_visible()
    await journey.shot(page, "passkey-login-page")
    async with page.expect_navigation():
        await sign_in.click()
    await expect(page.get_by_text("You are logged in.")).to_be_visible()
    async with page.expect_navigation():
        await page.get_by_role("link", name="Continue").click()
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#who-label")).to_have_text("Signed in")
    await expect_favourites(page, "teapot", "plant", "socks")
    assert (await _me(page, stack.anonid))["id"] == guest_id
    await journey.shot(page, "passkey-merged")
    await other.close()

    assert await user_row(engine, second_guest) is None
    events = await events_of(engine, guest_id)
    assert ("user.converted", {"id": guest_id, "method": "passkey"}) in events
    assert ("user.merged", {"from": second_guest, "into": guest_id}) in events
    assert (await stored_count(engine, guest_id))[0] >= 1  # the sign-in moved the counter
    assert journey.problems == []


async def test_the_setup_page_and_the_security_page_work_with_a_passkey(
    passkey_stack: Stack, journey: Journey, engine: AsyncEngine
) -> None:
    stack = passkey_stack
    email = fresh_email("passkey-setup")
    context, page = await journey.context()
    device = await Authenticator.on(context, page)
    await open_shop(page, stack.shop)
    await favourite(page, "mug")
    guest_id = (await _me(page, stack.anonid))["id"]
    await page.fill("#signup-email", email)
    await page.click("#signup-form button[type=submit]")
    await expect(page.locator("#signup-status")).to_contain_text(email)

    # The link opened in the same browser: "Save with a passkey" instead of a password.
    await page.goto(await setup_link_for(page, f"{stack.anonid}/dev/mail", email))
    await journey.shot(page, "passkey-setup-page")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Save with a passkey").click()
    await expect(page.get_by_text(f"You are logged in as {email}.")).to_be_visible()
    row = await user_row(engine, guest_id)
    assert not row.is_anonymous and row.email == email and row.data == {"favourites": {"mug": True}}

    # The security page. The same authenticator again is excluded by the options: the browser
    # refuses and the page says so. Another device adds a second passkey.
    await page.goto(f"{stack.anonid}/account/security")
    add = page.get_by_role("button", name="Add a passkey")
    await add.click()
    await expect(page.get_by_role("alert")).to_have_text(
        "The passkey did not work. Try again, or choose another way."
    )
    await device.remove()
    await Authenticator.on(context, page)
    async with page.expect_navigation():
        await add.click()
    await expect(page.get_by_role("status")).to_have_text("Your passkey is saved.")
    await expect(page.locator("li.passkey strong.name")).to_have_count(2)
    first = page.locator("li.passkey").first
    await first.get_by_label("Name of this passkey").fill("Work laptop")
    async with page.expect_navigation():
        await first.get_by_role("button", name="Rename Passkey").click()
    await expect(page.get_by_role("status")).to_have_text("The passkey is renamed.")
    await expect(page.locator("li.passkey strong.name").first).to_have_text("Work laptop")
    await journey.shot(page, "passkey-security")
    async with page.expect_navigation():
        await page.get_by_role("button", name="Remove Work laptop").click()
    await expect(page.locator("li.passkey strong.name")).to_have_count(1)
    await context.close()
    assert journey.problems == []


async def test_no_serious_accessibility_violation_on_the_passkey_pages(
    passkey_stack: Stack, journey: Journey
) -> None:
    stack = passkey_stack
    source = axe_source()
    # axe is injected past the pages' policy (which allows anonid's own script file only).
    context = await journey.browser.new_context(bypass_csp=True)
    page = await context.new_page()
    await Authenticator.on(context, page)
    await page.goto(stack.anonid + "/account/login")
    await page.evaluate("() => fetch('/v1/anonymous', {method: 'POST'})")  # a guest
    problems: dict[str, Any] = {}
    for path in ("/account/login", "/account/login?lang=de", "/account/security?lang=fr"):
        await page.goto(stack.anonid + path)
        await expect(page.locator("form.passkey").first).to_be_visible()
        found = await _violations(page, source)
        if found:
            problems[path] = found
    assert problems == {}
    await context.close()


async def _page_at(context: BrowserContext, origin: str) -> Page:
    """A page on ``origin`` (answered by Playwright: no server there) with anonid's helper."""

    async def blank(route: Route) -> None:
        await route.fulfill(status=200, content_type="text/html", body=BLANK)

    await context.route(f"{origin}/**", blank)
    page = await context.new_page()
    await page.goto(origin + "/")
    await page.add_script_tag(content=SCRIPT)
    return page


async def _assertion(page: Page, options: dict[str, Any]) -> dict[str, Any]:
    """What ``navigator.credentials.get()`` answers on ``page`` (as JSON)."""
    return await page.evaluate("(o) => anonidPasskeys.getCredential(o)", options)  # type: ignore[no-any-return]


class Api:
    """A client without cookies: the challenge travels in ``X-Anonid-Challenge-Id``."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def options(self) -> tuple[dict[str, Any], str]:
        r = await self.client.post("/v1/login/passkey/options")
        assert r.status_code == 200, r.text
        self.client.cookies.clear()
        return r.json(), r.headers[CHALLENGE_ID]

    async def sign_in(self, credential: dict[str, Any], challenge_id: str) -> httpx.Response:
        headers = {CHALLENGE_ID: challenge_id, "X-Anonid-Token": "bearer"}
        return await self.client.post(
            "/v1/login/passkey", json={"credential": credential}, headers=headers
        )


async def test_a_clone_a_replayed_challenge_another_origin_and_another_rp_id_are_refused(
    passkey_stack: Stack,
    journey: Journey,
    engine: AsyncEngine,
    app_with: AppFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stack = passkey_stack
    context, page = await journey.context()
    device = await Authenticator.on(context, page)
    await page.goto(stack.anonid + "/account/login")
    made = await page.evaluate(
        """async () => {
            await fetch("/v1/anonymous", {method: "POST"});
            return anonidPasskeys.add(location.origin);
        }"""
    )
    account = made["user"]["id"]
    [snapshot] = await device.credentials()  # the authenticator as it was: to clone later

    async with httpx.AsyncClient(base_url=stack.anonid, timeout=30) as client:
        api = Api(client)
        # A challenge is used once: the same assertion posted again is refused.
        options, challenge = await api.options()
        assertion = await _assertion(page, options)
        first = await api.sign_in(assertion, challenge)
        assert first.status_code == 200 and first.json()["user"]["id"] == account
        replayed = await api.sign_in(assertion, challenge)
        assert replayed.status_code == 401 and replayed.json()["error"] == "invalid_credentials"
        [stored] = await stored_count(engine, account)
        assert stored > snapshot["signCount"]  # the authenticator counts, and anonid keeps it

        # A clone of the authenticator, made before that sign-in: its count is behind.
        clone_context, clone_page = await journey.context()
        clone = await Authenticator.on(clone_context, clone_page)
        await clone.add(snapshot)
        await clone_page.goto(stack.anonid + "/account/login")
        options, challenge = await api.options()
        cloned = await api.sign_in(await _assertion(clone_page, options), challenge)
        assert cloned.status_code == 401
        assert await stored_count(engine, account) == [stored]
        await clone_context.close()
        options, challenge = await api.options()
        assert (await api.sign_in(await _assertion(page, options), challenge)).status_code == 200

        # The same passkey used on an origin anonid does not accept.
        [current] = await device.credentials()
        foreign = await _page_at(context, FOREIGN)
        await (await Authenticator.on(context, foreign)).add(current)
        options, challenge = await api.options()
        elsewhere = await api.sign_in(await _assertion(foreign, options), challenge)
        assert elsewhere.status_code == 401

    # The same key pair held by the browser for another RP id, used on an origin this anonid
    # accepts: only the RP id is wrong, and that is what refuses it.
    _, c = await app_with(public_url=stack.anonid, webauthn_origins=f"{stack.anonid},{EVIL}")
    api = Api(c)
    evil = await _page_at(context, EVIL)
    await (await Authenticator.on(context, evil)).add({**current, "rpId": "evil.localhost"})
    options, challenge = await api.options()
    assertion = await _assertion(evil, {**options, "rpId": "evil.localhost"})
    with caplog.at_level(logging.INFO, logger="anonid.passkeys"):
        other_rp = await api.sign_in(assertion, challenge)
    assert other_rp.status_code == 401
    assert "Unexpected RP ID hash" in caplog.text
    # That anonid takes the passkey itself, for its own RP id.
    options, challenge = await api.options()
    assert (await api.sign_in(await _assertion(page, options), challenge)).status_code == 200
    await context.close()
    assert journey.problems == []
