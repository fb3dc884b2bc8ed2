"""The operators' console at /admin over HTTP: sign-in with the admin key into a short, strict,
/admin-only cookie; CSRF tokens on every form and no cross-site post; the overview, users, one
account, outbox and cull pages, each reading what the admin API reads."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.admin.session import IDLE
from tests.account_support import bare_client, fresh_email, new_guest, register
from tests.conftest import AppFactory
from tests.console_support import csrf_in, sign_in
from tests.lifecycle_support import (
    ADMIN_KEY,
    FAR_CUTOFF_DAYS,
    FAR_PAST_DAYS,
    admin_headers,
    existing,
    insert_guests,
)

COOKIE = "__Secure-anonid_session_admin"


@pytest.fixture
async def console_app(app_with: AppFactory) -> FastAPI:
    application, _ = await app_with(admin_api_key=ADMIN_KEY)
    return application


@pytest.fixture
async def console(console_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A browser signed in to the console."""
    async with bare_client(console_app) as browser:
        r = await sign_in(browser)
        assert r.status_code == 303 and r.headers["location"] == "/admin", r.text
        yield browser


async def session_version(engine: AsyncEngine, user_id: str) -> Any:
    async with engine.connect() as conn:
        return await conn.scalar(
            sa.text("SELECT session_version FROM users WHERE id = :id"), {"id": user_id}
        )


CONSOLE_PAGES = [
    "/admin",
    "/admin/users",
    f"/admin/users/{uuid.uuid4()}",
    "/admin/outbox",
    "/admin/cull",
]
CONSOLE_FORMS = [
    "/admin/signout",
    f"/admin/users/{uuid.uuid4()}/end-sessions",
    f"/admin/users/{uuid.uuid4()}/delete",
    "/admin/outbox/1/retry",
    "/admin/cull",
]


async def test_without_a_console_session_every_page_and_form_leads_to_the_sign_in_form(
    console_app: FastAPI,
) -> None:
    async with bare_client(console_app) as browser:
        for path in CONSOLE_PAGES:
            r = await browser.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/admin/signin", path
        for path in CONSOLE_FORMS:
            r = await browser.post(path, data={"csrf": "x", "confirm": "yes"})
            assert r.status_code == 303 and r.headers["location"] == "/admin/signin", path
        form = await browser.get("/admin/signin")
        assert form.status_code == 200 and 'name="key"' in form.text
        assert "<script" not in form.text
        assert "script-src" not in form.headers["content-security-policy"]
        assert "default-src 'none'" in form.headers["content-security-policy"]
        assert form.headers["cache-control"] == "no-store"


async def test_the_admin_key_signs_in_to_a_short_strict_cookie_for_admin_only(
    console_app: FastAPI,
) -> None:
    async with bare_client(console_app) as browser:
        r = await sign_in(browser)
        assert r.status_code == 303
        cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(COOKIE + "="))
        attributes = {a.strip().split("=")[0].lower(): a for a in cookie.split(";")[1:]}
        assert attributes["path"].strip() == "Path=/admin"
        assert attributes["samesite"].strip() == "SameSite=Strict"
        assert "httponly" in attributes and "secure" in attributes
        assert 0 < int(attributes["max-age"].split("=")[1]) <= IDLE
        assert ADMIN_KEY not in cookie
        overview = await browser.get("/admin")
        assert overview.status_code == 200 and "Daily funnel" in overview.text

        # Signing out ends it.
        r = await browser.post("/admin/signout", data={"csrf": csrf_in(overview, "/admin/signout")})
        assert r.status_code == 303 and r.headers["location"] == "/admin/signin"
        assert (await browser.get("/admin")).status_code == 303


async def test_a_wrong_admin_key_is_refused_and_signs_nobody_in(console_app: FastAPI) -> None:
    async with bare_client(console_app) as browser:
        for key in ("", "wrong-" + ADMIN_KEY, ADMIN_KEY[:-1]):
            r = await sign_in(browser, key)
            assert r.status_code == 401, key
            assert "That is not the admin key." in r.text
            assert not any(c.startswith(COOKIE) for c in r.headers.get_list("set-cookie"))
        assert (await browser.get("/admin")).headers["location"] == "/admin/signin"


async def test_without_an_admin_key_configured_the_console_is_off(app: FastAPI) -> None:
    async with bare_client(app) as browser:
        form = await browser.get("/admin/signin")
        assert "The console is off" in form.text and 'name="key"' not in form.text
        r = await browser.post("/admin/signin", data={"csrf": "x", "key": ""})
        assert r.status_code == 403  # no token: nothing is even checked
        assert (await browser.get("/admin")).status_code == 303


async def test_a_console_form_without_its_own_csrf_token_is_refused(
    console: httpx.AsyncClient, console_app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(console_app) as person:
        user = await register(person, engine)
    before = await session_version(engine, user["id"])
    page = await console.get(f"/admin/users/{user['id']}")
    delete_token = csrf_in(page, f"/admin/users/{user['id']}/delete")
    for fields in ({}, {"csrf": "forged"}, {"csrf": delete_token}):  # none, wrong, another form's
        r = await console.post(f"/admin/users/{user['id']}/end-sessions", data=fields)
        assert r.status_code == 403, fields
        assert "did not come from this console" in r.text
    assert await session_version(engine, user["id"]) == before

    # The sign-in form's token is bound to the browser that fetched the form.
    async with bare_client(console_app) as other:
        form = await other.get("/admin/signin")
        async with bare_client(console_app) as attacker:
            r = await attacker.post(
                "/admin/signin", data={"csrf": csrf_in(form, "/admin/signin"), "key": ADMIN_KEY}
            )
            assert r.status_code == 403
            assert not any(c.startswith(COOKIE) for c in r.headers.get_list("set-cookie"))


async def test_a_cross_site_post_to_the_console_is_refused_with_cookie_and_token(
    console: httpx.AsyncClient, console_app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(console_app) as person:
        user = await register(person, engine)
    before = await session_version(engine, user["id"])
    action = f"/admin/users/{user['id']}/end-sessions"
    token = csrf_in(await console.get(f"/admin/users/{user['id']}"), action)
    for headers in (
        {"Origin": "https://evil.example"},
        {"Referer": "https://evil.example/page"},
        {"Sec-Fetch-Site": "cross-site"},
    ):
        r = await console.post(action, data={"csrf": token}, headers=headers)
        assert r.status_code == 403, headers
        assert r.json()["error"] == "csrf_rejected"
    sign_in_form = await console.get("/admin/signin")  # signed in: back to the overview
    assert sign_in_form.status_code == 303
    async with bare_client(console_app) as browser:
        form = await browser.get("/admin/signin")
        r = await browser.post(
            "/admin/signin",
            data={"csrf": csrf_in(form, "/admin/signin"), "key": ADMIN_KEY},
            headers={"Origin": "https://evil.example"},
        )
        assert r.status_code == 403 and r.json()["error"] == "csrf_rejected"
    assert await session_version(engine, user["id"]) == before
    # The same post from the console's own origin works.
    r = await console.post(action, data={"csrf": token}, headers={"Origin": "https://anonid.test"})
    assert r.status_code == 303
    assert await session_version(engine, user["id"]) == before + 1


async def test_a_new_admin_key_ends_every_console_session(
    console: httpx.AsyncClient, app_with: AppFactory
) -> None:
    rotated, _ = await app_with(admin_api_key=ADMIN_KEY + "-rotated")
    async with bare_client(rotated) as browser:
        browser.cookies = console.cookies
        r = await browser.get("/admin")
        assert r.status_code == 303 and r.headers["location"] == "/admin/signin"
    assert (await console.get("/admin")).status_code == 200  # the old key's app still knows it


async def test_overview_shows_the_funnel_of_the_stats_api_as_chart_and_table(
    console: httpx.AsyncClient, console_app: FastAPI
) -> None:
    async with bare_client(console_app) as visitor:
        await new_guest(visitor)
    async with bare_client(console_app) as api:
        stats = (await api.get("/v1/admin/stats?days=90", headers=admin_headers())).json()
    for days in (30, 90):
        page = await console.get(f"/admin?days={days}")
        assert page.status_code == 200
        daily = stats["daily"][-days:]
        rows = re.findall(r'<tr data-date="([^"]+)">(.*?)</tr>', page.text, re.S)
        assert [d for d, _ in rows] == [day["date"] for day in daily]
        for (_, cells), day in zip(rows, daily, strict=True):
            shown = dict(re.findall(r'data-figure="(\w+)">(\d+)<', cells))
            assert {k: int(v) for k, v in shown.items()} == {
                k: day[k]
                for k in (
                    "anonymous_created",
                    "conversions_started",
                    "converted",
                    "merged",
                    "culled",
                )
            }
        chart = re.search(
            r'<g class="series" data-series="anonymous_created".*?</g>', page.text, re.S
        )
        assert chart is not None
        points = re.findall(r'data-date="([^"]+)" data-value="(\d+)"', chart.group(0))
        assert [(d, int(v)) for d, v in points] == [
            (x["date"], x["anonymous_created"]) for x in daily
        ]
        assert daily[-1]["anonymous_created"] >= 1
    rate = f"{stats['conversion_rate_30d'] * 100:.1f} %"
    assert rate in page.text
    assert f'id="outbox-failed"><a href="/admin/outbox">{stats["outbox"]["failed"]:,}' in page.text
    assert 'data-label="Guests"' in page.text and 'data-label="Registered"' in page.text


async def test_users_page_filters_by_state_inactivity_and_address_in_keyset_pages(
    console: httpx.AsyncClient, console_app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(console_app) as person:
        user = await register(person, engine)
    stale = await insert_guests(engine, 3, days_ago=FAR_PAST_DAYS)
    await insert_guests(engine, 30)  # at least two pages of 25

    registered = await console.get("/admin/users?state=registered&limit=200")
    states = set(re.findall(r'data-state="(\w+)"', registered.text))
    assert states == {"registered"}

    found = await console.get("/admin/users", params={"email": user["email"].upper()})
    assert re.findall(r'<tr data-id="([^"]+)"', found.text) == [user["id"]]

    old = await console.get(f"/admin/users?state=anonymous&inactive_days={FAR_CUTOFF_DAYS}")
    assert set(stale) <= set(re.findall(r'<tr data-id="([^"]+)"', old.text))

    by_id = await console.get("/admin/users", params={"email": user["id"]})
    assert by_id.status_code == 303 and by_id.headers["location"] == f"/admin/users/{user['id']}"

    first = await console.get("/admin/users?limit=25")
    first_ids = re.findall(r'<tr data-id="([^"]+)"', first.text)
    next_link = re.search(r'<a href="([^"]+)" rel="next">', first.text)
    assert len(first_ids) == 25 and next_link is not None
    second = await console.get(next_link.group(1).replace("&amp;", "&"))
    second_ids = re.findall(r'<tr data-id="([^"]+)"', second.text)
    assert second_ids and min(map(uuid.UUID, second_ids)) > max(map(uuid.UUID, first_ids))

    for bad in ("state=zombie", "inactive_days=-1", "inactive_days=abc", "cursor=%25%25"):
        r = await console.get(f"/admin/users?{bad}")
        assert r.status_code == 422 and 'role="alert"' in r.text, bad


async def test_one_account_shows_fields_data_and_events_and_ends_its_sessions(
    console: httpx.AsyncClient, console_app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(console_app) as person:
        user = await register(person, engine, data={"theme": "dark"})
        assert (await person.get("/v1/me")).status_code == 200
        page = await console.get(f"/admin/users/{user['id']}")
        assert page.status_code == 200
        assert user["email"] in page.text and "&#34;theme&#34;: &#34;dark&#34;" in page.text
        assert "user.converted" in page.text and "user.conversion_started" in page.text
        assert 'id="sign-in-methods"' in page.text
        sessions = (await person.get("/v1/me/sessions")).json()["sessions"]
        assert sessions and all(s["id"] in page.text for s in sessions)
        assert 'id="passkeys"' not in page.text and 'id="identities"' not in page.text
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO passkeys (id, user_id, credential_id, public_key, name)"
                    " VALUES (gen_random_uuid(), :u, :c, 'k', 'Laptop key')"
                ),
                {"u": uuid.UUID(user["id"]), "c": uuid.uuid4().bytes},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO identities (id, user_id, provider, subject, email)"
                    " VALUES (gen_random_uuid(), :u, 'example', 'sub-42', :e)"
                ),
                {"u": uuid.UUID(user["id"]), "e": user["email"]},
            )
        listed = (await console.get(f"/admin/users/{user['id']}")).text
        assert 'id="passkeys"' in listed and "Laptop key" in listed
        assert 'id="identities"' in listed and "sub-42" in listed

        action = f"/admin/users/{user['id']}/end-sessions"
        r = await console.post(action, data={"csrf": csrf_in(page, action)})
        assert r.status_code == 303
        assert r.headers["location"] == f"/admin/users/{user['id']}?done=sessions_ended"
        ended = (await console.get(r.headers["location"])).text
        assert "Every session of this account has ended" in ended
        assert 'id="no-sessions"' in ended and sessions[0]["id"] not in ended
        refused = await person.get("/v1/me")
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_session"

    async with bare_client(console_app) as visitor:
        guest = await new_guest(visitor)
    guest_page = await console.get(f"/admin/users/{guest['id']}")
    assert 'id="end-sessions"' not in guest_page.text  # a guest is deleted, not signed out
    missing = await console.get(f"/admin/users/{uuid.uuid4()}")
    assert missing.status_code == 404


async def test_deleting_an_account_needs_the_box_ticked_then_erases_it(
    console: httpx.AsyncClient, console_app: FastAPI
) -> None:
    async with bare_client(console_app) as visitor:
        guest = await new_guest(visitor)
    page = await console.get(f"/admin/users/{guest['id']}")
    action = f"/admin/users/{guest['id']}/delete"
    token = csrf_in(page, action)
    r = await console.post(action, data={"csrf": token})
    assert r.status_code == 422 and "Tick the box" in r.text
    r = await console.post(action, data={"csrf": token, "confirm": "yes"})
    assert r.status_code == 303 and r.headers["location"] == "/admin/users?done=deleted"
    async with bare_client(console_app) as api:
        gone = await api.get(f"/v1/admin/users/{guest['id']}", headers=admin_headers())
    assert gone.status_code == 404


async def _failed_email(engine: AsyncEngine, error: str) -> int:
    async with engine.begin() as conn:
        return int(
            await conn.scalar(
                sa.text(
                    "INSERT INTO outbox (kind, payload, attempts, last_error, created_at,"
                    " failed_at, next_attempt_at, locale) VALUES ('email', CAST(:p AS jsonb), 9,"
                    " :e, now() - interval '2 days', now(), now() + interval '1 year', 'de')"
                    " RETURNING id"
                ),
                {
                    "p": json.dumps({"email_kind": "password_reset", "to": fresh_email("fail")}),
                    "e": error,
                },
            )
        )


async def test_outbox_page_shows_failed_rows_with_their_error_and_retries_one(
    console: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    error = "SMTPRecipientsRefused: 550 mailbox unavailable " + uuid.uuid4().hex
    row_id = await _failed_email(engine, error)
    page = await console.get("/admin/outbox")
    assert page.status_code == 200 and error in page.text
    action = f"/admin/outbox/{row_id}/retry"
    token = csrf_in(page, action)
    r = await console.post(action, data={"csrf": token})
    assert r.status_code == 303 and r.headers["location"] == "/admin/outbox?done=retried"
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT failed_at, next_attempt_at <= now() AS due FROM outbox WHERE id = :id"
                ),
                {"id": row_id},
            )
        ).one()
    assert row.failed_at is None and row.due
    assert error not in (await console.get("/admin/outbox")).text
    again = await console.post(action, data={"csrf": token})
    assert again.headers["location"] == "/admin/outbox?done=gone"


async def test_cull_page_dry_run_counts_and_deletes_nothing_then_culls(
    console: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    stale = await insert_guests(engine, 4, days_ago=FAR_PAST_DAYS)
    page = await console.get("/admin/cull")
    token = csrf_in(page, "/admin/cull")
    fields = {"csrf": token, "older_than_days": str(FAR_CUTOFF_DAYS)}
    dry = await console.post("/admin/cull", data={**fields, "action": "dry_run"})
    assert dry.status_code == 200 and 'data-dry-run="true"' in dry.text
    matched = int(re.search(r'id="cull-matched">(\d+)<', dry.text).group(1))  # type: ignore[union-attr]
    assert matched >= 4 and 'id="cull-deleted">0<' in dry.text
    assert await existing(engine, stale) == set(stale)

    run = await console.post("/admin/cull", data={**fields, "action": "run"})
    assert run.status_code == 200 and 'data-dry-run="false"' in run.text
    assert await existing(engine, stale) == set()
    bad = await console.post("/admin/cull", data={**fields, "older_than_days": "0"})
    assert bad.status_code == 422


async def test_console_reads_failed_deliveries_and_events_through_their_indexes(
    engine: AsyncEngine,
) -> None:
    from app.lifecycle.listing import _EVENTS
    from app.outbox.failures import _AFTER, _FIRST

    async with engine.begin() as conn:
        # A test database is small enough for any scan to be cheapest: forbid the sequential one
        # to see that an index serves each query (the listing's plans are proved on 60,000 rows
        # in test_admin).
        await conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        plans = {}
        for name, statement, params in (
            ("events", _EVENTS, {"id": uuid.uuid4(), "limit": 51}),
            ("failed", _FIRST, {"limit": 51}),
            ("failed after", _AFTER, {"limit": 51, "failed_at": datetime.now(UTC), "id": 1}),
        ):
            plan = await conn.scalars(sa.text("EXPLAIN " + statement.text), params)
            plans[name] = "\n".join(plan)
    assert "ix_events_user_id" in plans["events"], plans["events"]
    assert "ix_outbox_failed_at" in plans["failed"], plans["failed"]
    assert "ix_outbox_failed_at" in plans["failed after"], plans["failed after"]


async def test_console_sign_in_attempts_are_rate_limited_per_client(app_with: AppFactory) -> None:
    limited, _ = await app_with(admin_api_key=ADMIN_KEY, login_rate_limit="2/minute")
    async with bare_client(limited) as browser:
        for _ in range(2):
            assert (await sign_in(browser, "guess")).status_code == 401
        r = await sign_in(browser, ADMIN_KEY)  # even the right key waits its turn
        assert r.status_code == 429 and "Too many attempts" in r.text
        assert int(r.headers["retry-after"]) >= 1
        assert not any(c.startswith(COOKIE) for c in r.headers.get_list("set-cookie"))
