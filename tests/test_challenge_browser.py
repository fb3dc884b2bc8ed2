"""The storefront with anonid asking for a proof of work (CONTRACT §16), in a real browser: the
first favourite solves anonid's ALTCHA challenge in a Web Worker and makes one guest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from playwright.async_api import Request, async_playwright, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.browser import ensure_chromium
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
