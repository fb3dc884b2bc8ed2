"""The console and the hosted pages in a real browser: Debian's Chromium, driven by Playwright,
against a real ``anonid serve`` (with its worker) on a database of this module's own.

An operator signs in (a wrong key first), reads the funnel chart's data from the page, switches
to 90 days, filters the users, opens one, ends its sessions, retries a failed outbox row (which
the worker then delivers) and runs a cull dry run; each step leaves a screenshot in
``test-artifacts/console/``. Then axe-core (npm, pinned in ``tests/npm/package-lock.json``)
checks every console page and every hosted page, in two languages, for serious or critical
accessibility violations.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect
from sqlalchemy.ext.asyncio import AsyncEngine

from app.lifecycle.counts import refresh_counts
from app.outbox.enqueue import render_email
from app.platform.db import create_engine
from tests.account_support import PASSWORD, fresh_email
from tests.browser import ensure_chromium
from tests.conftest import make_settings
from tests.lifecycle_support import ADMIN_KEY, insert_guests
from tests.npm_support import axe_source
from tests.processes import Served, clean_env, free_port

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
]
STEP_TIMEOUT_MS = 20_000
BRAND = "Teapot & Co"
STALE_GUESTS = 5
BACKDATED = {10: 7, 3: 2}  # days ago -> guests created that day (events)
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


@dataclass
class Stack:
    url: str
    engine: AsyncEngine
    registered: dict[str, Any]
    pending_token: str
    failed_row: int
    failed_error: str


async def _json(client: httpx.AsyncClient, method: str, path: str, **kw: Any) -> Any:
    r = await client.request(method, path, **kw)
    assert r.status_code < 300, r.text
    return r.json() if r.content else None


async def _setup_token(api: httpx.AsyncClient, email: str) -> str:
    """The setup link's token from the email the worker delivered to the local catcher."""
    for _ in range(100):
        inbox = (await api.get("/dev/mail")).text
        for article in inbox.split("<article")[1:]:
            if f'class="to">{email}<' in article:
                return article.split("token=", 1)[1].split('"', 1)[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no setup email to {email}")


async def _seed(url: str, database_url: str) -> Stack:
    engine = create_engine(database_url, pool_size=2)
    bearer = {"X-Anonid-Token": "bearer"}
    async with httpx.AsyncClient(base_url=url, timeout=30) as api:
        for _ in range(2):
            await _json(api, "POST", "/v1/anonymous", headers=bearer)
        # A guest who registers (the worker may deliver its email: the token is read first).
        guest = await _json(api, "POST", "/v1/anonymous", headers=bearer)
        auth = {"Authorization": f"Bearer {guest['access_token']}"}
        email = fresh_email("console")
        await _json(api, "POST", "/v1/me/conversion", json={"email": email}, headers=auth)
        token = await _setup_token(api, email)
        done = await _json(
            api,
            "POST",
            "/v1/password-setup",
            json={"token": token, "password": PASSWORD},
            headers=bearer,
        )
        registered = {"id": done["user"]["id"], "email": email, "token": done["access_token"]}
        # A guest left pending, for the setup page.
        other = await _json(api, "POST", "/v1/anonymous", headers=bearer)
        other_auth = {"Authorization": f"Bearer {other['access_token']}"}
        pending = fresh_email("pending")
        await _json(api, "POST", "/v1/me/conversion", json={"email": pending}, headers=other_auth)
        pending_token = await _setup_token(api, pending)
    await insert_guests(engine, STALE_GUESTS, days_ago=400)
    settings = make_settings(database_url, public_url=url, brand_name=BRAND)
    payload = render_email(
        settings,
        "password_reset",
        fresh_email("bounced"),
        {"link": f"{url}/account/reset?token=x", "ttl_minutes": 60},
        "en",
    )
    error = "SMTPRecipientsRefused: 550 5.1.1 mailbox unavailable"
    async with engine.begin() as conn:
        for days, count in BACKDATED.items():
            await conn.execute(
                sa.text(
                    "INSERT INTO events (id, type, payload, created_at)"
                    " SELECT gen_random_uuid(), 'user.anonymous_created', '{}',"
                    " now() - make_interval(days => :d) FROM generate_series(1, :n)"
                ),
                {"d": days, "n": count},
            )
        failed_row = await conn.scalar(
            sa.text(
                "INSERT INTO outbox (kind, payload, attempts, last_error, created_at, failed_at,"
                " next_attempt_at, locale) VALUES ('email', CAST(:p AS jsonb), 14, :e,"
                " now() - interval '25 hours', now(), now() + interval '1 year', 'en') RETURNING id"
            ),
            {"p": json.dumps(payload), "e": error},
        )
        # The worker recounts accounts every minute; count the seeded ones now.
        await refresh_counts(conn)
    return Stack(url, engine, registered, pending_token, int(failed_row), error)


@pytest.fixture(scope="module")
def served(private_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port(18500, 18550)
    url = f"http://127.0.0.1:{port}"
    server = Served(
        tmp_path_factory.mktemp("console"),
        clean_env(
            ANONID_DATABASE_URL=private_url,
            ANONID_PUBLIC_URL=url,
            ANONID_ADMIN_API_KEY=ADMIN_KEY,
            ANONID_COOKIE_SECURE="false",
            ANONID_CULL_INTERVAL_MINUTES="0",
            ANONID_BRAND_NAME=BRAND,
            ANONID_BRAND_COLOR="#6b2d8b",
        ),
        port,
    )
    try:
        server.wait_ready()
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def stack(served: str, private_url: str) -> AsyncIterator[Stack]:
    seeded = await _seed(served, private_url)
    yield seeded
    await seeded.engine.dispose()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        chromium = await p.chromium.launch(
            executable_path=ensure_chromium(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


class Watch:
    """What the browser reports that a working page never causes: script errors, failed
    requests, server errors. (Refusals such as the wrong key's 401 are answers, not problems:
    Chromium logs each as "Failed to load resource", which is left to the status check.)"""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("console", self._console)
        page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url} {r.failure}"))
        page.on(
            "response",
            lambda r: self.problems.append(f"HTTP {r.status} {r.url}") if r.status >= 500 else None,
        )

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(f"console: {message.text}")


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


async def sign_in(page: Page, url: str, key: str = ADMIN_KEY) -> None:
    await page.goto(url + "/admin")
    await expect(page).to_have_url(url + "/admin/signin")
    await page.get_by_label("Admin key").fill(key)
    await page.get_by_role("button", name="Sign in").click()


async def chart_points(page: Page, series: str) -> list[tuple[str, int]]:
    points = await page.eval_on_selector_all(
        f'#funnel-chart g[data-series="{series}"] circle',
        "els => els.map(e => [e.dataset.date, Number(e.dataset.value)])",
    )
    return [(d, v) for d, v in points]


async def test_an_operator_signs_in_reads_the_funnel_and_manages_users_outbox_and_cull(
    stack: Stack, browser: Browser
) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    page = await context.new_page()
    watch = Watch(page)

    # A wrong key is refused; the right one signs in.
    await sign_in(page, stack.url, "not-" + ADMIN_KEY)
    await expect(page.get_by_role("alert")).to_have_text("That is not the admin key.")
    await shot(page, "01-wrong-key")
    await page.get_by_label("Admin key").fill(ADMIN_KEY)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(stack.url + "/admin")
    await expect(page.get_by_role("heading", name="Daily funnel, last 30 days")).to_be_visible()
    await expect(page.locator("header.top")).to_contain_text(BRAND)

    # The funnel chart's data, read from the page: today's guests, conversion and the backdated days.
    created = await chart_points(page, "anonymous_created")
    assert len(created) == 30
    by_day = dict(created)
    assert created[-1][1] == 4  # the four guests made just now (one registered, one pending)
    for days, count in BACKDATED.items():
        assert created[-1 - days][1] == count, (days, created)
    assert dict(await chart_points(page, "converted"))[created[-1][0]] == 1
    assert dict(await chart_points(page, "conversions_started"))[created[-1][0]] == 2
    table_today = page.locator(f'#funnel-table tr[data-date="{created[-1][0]}"]')
    await expect(table_today.locator('td[data-figure="anonymous_created"]')).to_have_text("4")
    assert sum(by_day.values()) == 4 + sum(BACKDATED.values())
    await shot(page, "02-overview")
    await page.get_by_role("link", name="90 days").click()
    await expect(page.get_by_role("heading", name="Daily funnel, last 90 days")).to_be_visible()
    assert len(await chart_points(page, "anonymous_created")) == 90
    await expect(page.locator("#funnel-table tbody tr")).to_have_count(90)

    # Users: filter by state, then by address; open the account.
    await page.get_by_role("link", name="Users").click()
    await page.get_by_label("State").select_option("registered")
    await page.get_by_role("button", name="Show").click()
    rows = page.locator("#users tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-state", "registered")
    await shot(page, "03-users-registered")
    await page.get_by_label("State").select_option("")
    await page.get_by_label("Address (exact) or account id").fill(stack.registered["email"].upper())
    await page.get_by_role("button", name="Show").click()
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-id", stack.registered["id"])
    await rows.first.get_by_role("link").click()
    await expect(page.locator("#user-email")).to_have_text(stack.registered["email"])
    await expect(page.locator("#events")).to_contain_text("user.converted")
    await shot(page, "04-user")

    # End its sessions: the token it held is refused from now on.
    async with httpx.AsyncClient(base_url=stack.url) as api:
        auth = {"Authorization": f"Bearer {stack.registered['token']}"}
        assert (await api.get("/v1/me", headers=auth)).status_code == 200
        await page.get_by_role("button", name="End sessions").click()
        await expect(page.get_by_role("status")).to_contain_text("Every session of this account")
        assert (await api.get("/v1/me", headers=auth)).status_code == 401
    await shot(page, "05-sessions-ended")

    # The outbox: the failed row and its last error; a retry, then the worker delivers it.
    await page.get_by_role("link", name="Outbox").click()
    failed = page.locator(f'#failed tr[data-id="{stack.failed_row}"]')
    await expect(failed.locator(".last-error")).to_have_text(stack.failed_error)
    await shot(page, "06-outbox-failed")
    await failed.get_by_role("button", name=f"Retry row {stack.failed_row}").click()
    await expect(page.get_by_role("status")).to_contain_text("due again")
    await expect(failed).to_have_count(0)
    async with stack.engine.connect() as conn:
        for _ in range(100):
            sent = await conn.scalar(
                sa.text("SELECT sent_at IS NOT NULL FROM outbox WHERE id = :id"),
                {"id": stack.failed_row},
            )
            if sent:
                break
            await page.wait_for_timeout(200)
    assert sent, "the retried email was not delivered"
    await shot(page, "07-outbox-retried")

    # The cull, as a dry run: the stale guests are counted, none deleted.
    await page.get_by_role("link", name="Cull").click()
    await page.get_by_role("button", name="Dry run").click()
    await expect(page.locator("#cull-result")).to_have_attribute("data-dry-run", "true")
    await expect(page.locator("#cull-matched")).to_have_text(str(STALE_GUESTS))
    await expect(page.locator("#cull-deleted")).to_have_text("0")
    async with stack.engine.connect() as conn:
        stale = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM users WHERE is_anonymous"
                " AND updated_at < now() - interval '300 days'"
            )
        )
    assert stale == STALE_GUESTS
    await shot(page, "08-cull-dry-run")
    assert watch.problems == []
    await context.close()


async def _violations(page: Page, source: str) -> list[dict[str, Any]]:
    await page.add_script_tag(content=source)
    found: list[dict[str, Any]] = await page.evaluate(
        """async (tags) => {
            const result = await axe.run(document, {runOnly: {type: "tag", values: tags}});
            return result.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map(n => n.target.join(" ")).slice(0, 5),
            }));
        }""",
        AXE_TAGS,
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


async def test_axe_finds_no_serious_or_critical_violation_on_console_and_hosted_pages(
    stack: Stack, browser: Browser
) -> None:
    source = axe_source()
    # The pages forbid every script; axe is injected past that policy, for the check only.
    context = await browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    page = await context.new_page()
    watch = Watch(page)
    problems: dict[str, list[dict[str, Any]]] = {}

    async def check(name: str) -> None:
        found = await _violations(page, source)
        if found:
            problems[name] = found

    url = stack.url
    hosted = [
        "/account/login",
        "/account/login?lang=de",
        "/account/reset",
        "/account/reset?lang=fr",
        f"/account/setup?token={stack.pending_token}",
        f"/account/setup?token={stack.pending_token}&lang=es",
        "/account/setup?token=unknown",
        "/account/reset?token=unknown&lang=de",
        f"/account/email?token={stack.pending_token}",
        f"/account/email?token={stack.pending_token}&lang=de",
        "/account/email?token=unknown&lang=fr",
        "/dev/mail",
        "/dev/mail?lang=de",
    ]
    for path in hosted:
        await page.goto(url + path)
        await check(path)
    # A page after a form: the reset form's answer, and the login form's refusal.
    await page.goto(url + "/account/reset?lang=de")
    await page.get_by_label("E-Mail-Adresse").fill(fresh_email("axe"))
    await page.get_by_role("button", name="Link senden").click()
    await expect(page.get_by_role("status")).to_be_visible()
    await check("reset sent (de)")
    await page.goto(url + "/account/login")
    await page.get_by_label("Email address").fill(fresh_email("axe"))
    await page.get_by_label("Password").fill(secrets.token_hex(8))
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_be_visible()
    await check("login refused")
    await page.goto(url + "/account/login?lang=es")
    await page.get_by_label("Dirección de correo electrónico").fill(fresh_email("axe"))
    await page.get_by_role("button", name="Envíame un código").click()
    await expect(page.get_by_role("status")).to_be_visible()
    await check("code sent (es)")

    await page.goto(url + "/admin/signin")
    await check("/admin/signin")
    await sign_in(page, url)
    await expect(page).to_have_url(url + "/admin")
    for path in (
        "/admin",
        "/admin?days=90",
        "/admin/users",
        "/admin/users?state=registered",
        f"/admin/users/{stack.registered['id']}",
        "/admin/outbox",
        "/admin/cull",
    ):
        await page.goto(url + path)
        await check(path)
    await page.get_by_role("button", name="Dry run").click()
    await expect(page.locator("#cull-result")).to_be_visible()
    await check("cull result")

    assert problems == {}, json.dumps(problems, indent=2)
    assert watch.problems == []
    await context.close()
