"""The storefront with anonid asking for a proof of work (CONTRACT §16), in a real browser: the
first favourite solves anonid's ALTCHA challenge in a Web Worker and makes one guest."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.async_api import Request, Route, async_playwright, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.pages import content_security_policy
from tests.browser import ensure_chromium
from tests.conftest import make_settings
from tests.test_browser_journey import CHROMIUM_ARGS, STEP_TIMEOUT_MS, Stack, _stack, favourite
from tests.test_browser_journey import open_shop as open_page


@pytest.fixture(scope="module")
def challenge_stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from _stack(
        database_url,
        tmp_path_factory.mktemp("challenge"),
        {"ANONID_ANONYMOUS_CHALLENGE": "altcha", "ANONID_CHALLENGE_MAX_NUMBER": "20000"},
        {},
    )


async def _spent(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.text("SELECT count(*) FROM spent_challenges")))


async def test_the_storefront_solves_the_challenge_in_a_worker_and_makes_one_guest(
    challenge_stack: Stack, engine: AsyncEngine
) -> None:
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    before = await _spent(engine)
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=ensure_chromium(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            sent: list[str | None] = []

            def remember(request: Request) -> None:
                if request.method == "POST" and request.url.endswith("/v1/anonymous"):
                    sent.append(request.headers.get("x-anonid-challenge"))

            page.on("request", remember)
            await open_page(page, challenge_stack.shop)
            await favourite(page, "teapot")
            await expect(page.locator("#who-label")).to_have_text("Guest")
            await favourite(page, "plant")  # the same guest: no second challenge
            cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
        finally:
            await browser.close()
    assert errors == []
    # The first try says a challenge is needed; the second carries the worker's solution.
    assert len(sent) == 2 and sent[0] is None and sent[1]
    assert "anonid_session" in cookies
    assert await _spent(engine) == before + 1


STATIC = Path(__file__).resolve().parent.parent / "app" / "static"


def test_the_vendored_widget_files_are_the_ones_its_readme_records() -> None:
    readme = (STATIC / "altcha" / "README.md").read_text()
    assert "**3.2.2**" in readme
    for name in ("altcha.min.js", "altcha.css", "sha.js"):
        digest = hashlib.sha256((STATIC / "altcha" / name).read_bytes()).hexdigest()
        assert f"| `{name}` |" in readme and digest in readme, name


async def test_the_vendored_widget_solves_a_challenge_under_a_self_only_policy(
    challenge_stack: Stack, engine: AsyncEngine
) -> None:
    """A page on anonid's origin with the hosted pages' policy for guest-making pages runs
    ``anonid-guest.js``: the ALTCHA widget (vendored, served by anonid, its SHA-256 worker too)
    solves anonid's challenge and the guest is made with it."""
    anonid = challenge_stack.anonid
    policy = content_security_policy(
        make_settings("postgresql://unused/x", public_url=anonid), guest_script=True
    )
    page_html = '<!doctype html><body><script type="module" src="/check.js"></script></body>'
    check_js = (
        'import { startGuest } from "/account/assets/anonid-guest.js";\n'
        "startGuest().then(async (r) => {\n"
        "  const body = await r.json();\n"
        "  document.body.dataset.result = r.status + ' ' + (body.user ? body.user.id : body.error);\n"
        "}, (e) => { document.body.dataset.result = 'error ' + e.message; });\n"
    )
    before = await _spent(engine)
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=ensure_chromium(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page()
            violations: list[str] = []
            page.on(
                "console",
                lambda m: (
                    violations.append(m.text) if "Content Security Policy" in m.text else None
                ),
            )

            async def serve_page(route: Route) -> None:
                await route.fulfill(
                    body=page_html,
                    content_type="text/html",
                    headers={"Content-Security-Policy": policy},
                )

            async def serve_check(route: Route) -> None:
                await route.fulfill(body=check_js, content_type="text/javascript")

            await page.route(f"{anonid}/check", serve_page)
            await page.route(f"{anonid}/check.js", serve_check)
            await page.goto(f"{anonid}/check")
            await expect(page.locator("body")).to_have_attribute(
                "data-result", re.compile(r"^201 [0-9a-f-]{36}$")
            )
        finally:
            await browser.close()
    assert violations == []
    assert await _spent(engine) == before + 1
