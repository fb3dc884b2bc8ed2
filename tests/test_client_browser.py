"""``@anonid/client`` in Chromium, loaded from the storefront's own static files (no CDN) on the
storefront's page, against a real ``anonid serve`` on another origin.

Cookie mode is the storefront's whole journey (tests/test_browser_journey.py and
tests/test_oidc_browser.py drive the page, which does everything through the library). Here:
bearer mode in a browser (tokens in ``localStorage``, sent cross-origin, kept across a reload)
and the proof-of-work solver running in a Web Worker.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from base64 import b64decode
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.async_api import Page, Worker

from tests.test_browser_journey import Journey, Stack, _stack, journey, open_shop

__all__ = ["journey"]

LIBRARY = "/static/anonid-client.js"


@pytest.fixture(scope="module")
def stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from _stack(database_url, tmp_path_factory.mktemp("client-browser"), {}, {})


BEARER_SESSION = """async ([library, url, patch]) => {
  const { createClient } = await import(library);
  const events = [];
  const client = createClient({ url, mode: "bearer", storage: window.localStorage });
  client.onAuthStateChange((event) => events.push(event));
  const { user } = await client.signInAnonymously();
  const data = patch ? await client.updateData(patch) : (await client.getUser()).data;
  client.dispose();
  return { id: user.id, data, events, stored: window.localStorage.getItem("anonid.session") };
}"""


async def bearer_session(page: Page, stack: Stack, patch: dict[str, Any] | None) -> Any:
    return await page.evaluate(BEARER_SESSION, [LIBRARY, stack.anonid, patch])


async def test_bearer_mode_keeps_its_tokens_in_local_storage_across_a_reload(
    stack: Stack, journey: Journey
) -> None:
    context, page = await journey.context()
    await open_shop(page, stack.shop)
    first = await bearer_session(page, stack, {"favourites": {"mug": True}})
    assert first["events"] == ["SIGNED_IN"]
    assert first["data"] == {"favourites": {"mug": True}}
    stored = json.loads(first["stored"])
    assert set(stored) == {"access_token", "refresh_token", "expires_at", "refresh_at"}
    # Bearer mode: anonid set no cookie in this browser.
    assert [c for c in await context.cookies(stack.anonid) if c["name"].startswith("anonid")] == []

    await open_shop(page, stack.shop)
    again = await bearer_session(page, stack, None)
    assert again["id"] == first["id"] and again["events"] == []
    assert again["data"] == {"favourites": {"mug": True}}
    await context.close()
    assert journey.problems == []


SOLVE = """async ([library, challenge]) => {
  const { solveChallenge } = await import(library);
  return await solveChallenge(challenge);
}"""


async def test_the_proof_of_work_is_solved_in_a_web_worker(stack: Stack, journey: Journey) -> None:
    context, page = await journey.context()
    await open_shop(page, stack.shop)
    workers: list[Worker] = []
    page.on("worker", lambda worker: workers.append(worker))
    salt, number = secrets.token_hex(12), secrets.randbelow(30_000)
    challenge = {
        "algorithm": "SHA-256",
        "challenge": hashlib.sha256(f"{salt}{number}".encode()).hexdigest(),
        "maxnumber": 50_000,
        "salt": salt,
        "signature": secrets.token_hex(32),
    }
    header = await page.evaluate(SOLVE, [LIBRARY, challenge])
    solution = json.loads(b64decode(header))
    assert solution == {
        **{k: v for k, v in challenge.items() if k != "maxnumber"},
        "number": number,
    }
    assert len(workers) == 1 and workers[0].url.startswith("blob:")
    await context.close()
    assert journey.problems == []
