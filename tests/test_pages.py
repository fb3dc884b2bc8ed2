"""Hosted pages: plain HTML forms, per-form CSRF tokens, no-referrer, session cookie on success."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.account_support import (
    PASSWORD,
    bare_client,
    fresh_email,
    last_token,
    new_guest,
    register,
    request_conversion,
)
from tests.conftest import AppFactory

CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def _csrf(page: httpx.Response) -> str:
    match = CSRF_FIELD.search(page.text)
    assert match is not None, page.text
    return match.group(1)


def _assert_page_headers(r: httpx.Response) -> None:
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


async def _pending_setup_token(app: FastAPI, engine: AsyncEngine) -> tuple[str, str, str]:
    async with bare_client(app) as guest_device:
        guest = await new_guest(guest_device)
        await guest_device.put("/v1/me/data", json={"kept": True})
        email = fresh_email("page")
        await request_conversion(guest_device, email)
    return guest["id"], email, await last_token(engine, email, "conversion_setup")


async def test_setup_page_finishes_a_conversion_with_a_plain_form_post(
    app: FastAPI, engine: AsyncEngine
) -> None:
    guest_id, email, token = await _pending_setup_token(app, engine)
    async with bare_client(app) as browser:
        page = await browser.get(f"/account/setup?token={token}")
        assert page.status_code == 200
        _assert_page_headers(page)
        assert "<form" in page.text and "<script" not in page.text
        assert "anonid_session_csrf=" in page.headers["set-cookie"]

        r = await browser.post(
            "/account/setup",
            data={
                "csrf": _csrf(page),
                "token": token,
                "password": PASSWORD,
                "password_again": PASSWORD,
            },
        )
        assert r.status_code == 200, r.text
        _assert_page_headers(r)
        assert "Your account is saved" in r.text and email in r.text
        assert "anonid_session=" in r.headers["set-cookie"]
        me = (await browser.get("/v1/me")).json()
        assert me["id"] == guest_id and me["state"] == "registered"
        assert me["email"] == email and me["data"] == {"kept": True}

        again = await browser.get(f"/account/setup?token={token}")
        assert again.status_code == 400 and "<form" not in again.text
        _assert_page_headers(again)


async def test_page_forms_refuse_a_missing_wrong_or_borrowed_csrf_token(
    app: FastAPI, engine: AsyncEngine
) -> None:
    guest_id, _, token = await _pending_setup_token(app, engine)
    fields = {"token": token, "password": PASSWORD, "password_again": PASSWORD}
    async with bare_client(app) as browser:
        login_page = await browser.get("/account/login")
        setup_page = await browser.get(f"/account/setup?token={token}")
        attempts = [
            {},  # no token at all
            {"csrf": "forged-" + _csrf(setup_page)[7:]},  # wrong
            {"csrf": _csrf(login_page)},  # a real token, but for another form
        ]
        for extra in attempts:
            r = await browser.post("/account/setup", data={**fields, **extra})
            assert r.status_code == 403, extra
            assert "did not come from this site" in r.text
            _assert_page_headers(r)

    async with bare_client(app) as attacker:
        # The right token without the browser's secret cookie is worthless.
        r = await attacker.post("/account/setup", data={**fields, "csrf": _csrf(setup_page)})
        assert r.status_code == 403
    async with engine.connect() as conn:
        anonymous = await conn.scalar(
            sa.text("SELECT is_anonymous FROM users WHERE id = :id"), {"id": guest_id}
        )
    assert anonymous is True


async def test_setup_page_explains_a_refused_password_and_keeps_the_form(
    app: FastAPI, engine: AsyncEngine
) -> None:
    _, _, token = await _pending_setup_token(app, engine)
    async with bare_client(app) as browser:
        page = await browser.get(f"/account/setup?token={token}")
        csrf = _csrf(page)
        r = await browser.post(
            "/account/setup",
            data={
                "csrf": csrf,
                "token": token,
                "password": "iloveyou",
                "password_again": "iloveyou",
            },
        )
        assert r.status_code == 422 and "commonly used" in r.text and "<form" in r.text
        r = await browser.post(
            "/account/setup",
            data={"csrf": csrf, "token": token, "password": PASSWORD, "password_again": "other"},
        )
        assert r.status_code == 422 and "not the same" in r.text
        r = await browser.post(
            "/account/setup",
            data={"csrf": csrf, "token": token, "password": PASSWORD, "password_again": PASSWORD},
        )
        assert r.status_code == 200


async def test_dead_links_get_a_page_that_says_why(app: FastAPI, engine: AsyncEngine) -> None:
    guest_id, _, token = await _pending_setup_token(app, engine)
    async with bare_client(app) as browser:
        r = await browser.get("/account/setup?token=not-a-real-token")
        assert r.status_code == 400 and "not valid" in r.text
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "UPDATE link_tokens SET expires_at = now() - interval '1 hour' WHERE user_id = :id"
                ),
                {"id": guest_id},
            )
        r = await browser.get(f"/account/setup?token={token}")
        assert r.status_code == 410 and "expired" in r.text
        _assert_page_headers(r)


async def test_login_page_logs_in_and_brings_the_guest_data_along(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine, data={"saved": [1]})
    async with bare_client(app) as browser:
        guest = await new_guest(browser)
        await browser.put("/v1/me/data", json={"saved": [2]})
        page = await browser.get("/account/login")
        assert page.status_code == 200 and "comes along" in page.text
        _assert_page_headers(page)

        wrong = await browser.post(
            "/account/login",
            data={"csrf": _csrf(page), "email": account["email"], "password": "wrong password"},
        )
        assert wrong.status_code == 401 and "not correct" in wrong.text
        assert account["email"] in wrong.text  # the address is kept in the form

        r = await browser.post(
            "/account/login",
            data={"csrf": _csrf(page), "email": account["email"], "password": PASSWORD},
        )
        assert r.status_code == 200 and "logged in" in r.text
        me = (await browser.get("/v1/me")).json()
        assert me["id"] == account["id"] and me["data"] == {"saved": [1, 2]}
    async with engine.connect() as conn:
        gone = await conn.scalar(
            sa.text("SELECT count(*) FROM users WHERE id = :id"), {"id": guest["id"]}
        )
    assert gone == 0


async def test_reset_pages_send_a_link_and_set_a_new_password(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
    async with bare_client(app) as browser:
        page = await browser.get("/account/reset")
        assert page.status_code == 200 and 'name="email"' in page.text
        r = await browser.post(
            "/account/reset", data={"csrf": _csrf(page), "email": account["email"]}
        )
        assert r.status_code == 200 and "on its way" in r.text
        token = await last_token(engine, account["email"], "password_reset")

        form = await browser.get(f"/account/reset?token={token}")
        assert form.status_code == 200 and 'name="password"' in form.text
        _assert_page_headers(form)
        new_password = "a new page-set passphrase"
        r = await browser.post(
            f"/account/reset?token={token}",
            data={
                "csrf": _csrf(form),
                "token": token,
                "password": new_password,
                "password_again": new_password,
            },
        )
        assert r.status_code == 200 and "password is changed" in r.text
        assert "anonid_session=" in r.headers["set-cookie"]
        assert (await browser.get("/v1/me")).json()["id"] == account["id"]
    async with bare_client(app) as c:
        r = await c.post("/v1/login", json={"email": account["email"], "password": new_password})
        assert r.status_code == 200


async def test_a_setup_link_does_not_open_the_reset_page(app: FastAPI, engine: AsyncEngine) -> None:
    _, _, token = await _pending_setup_token(app, engine)
    async with bare_client(app) as browser:
        r = await browser.get(f"/account/reset?token={token}")
        assert r.status_code == 400 and "<form" not in r.text


async def test_pages_escape_what_they_echo(client: httpx.AsyncClient) -> None:
    page = await client.get("/account/login")
    r = await client.post(
        "/account/login",
        data={"csrf": _csrf(page), "email": "<script>alert(1)</script>", "password": "x"},
    )
    assert r.status_code == 401
    assert "<script>alert(1)</script>" not in r.text and "&lt;script&gt;" in r.text


# Finding 2: form tokens are keyed by a server secret and bound to the session.


def _old_style_token(cookie_value: str, form: str) -> str:
    """The token the forms accepted before: an HMAC keyed only by the CSRF cookie's value."""
    mac = hmac.new(cookie_value.encode(), f"anonid-form:{form}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


async def test_a_planted_csrf_cookie_cannot_merge_a_victims_guest_into_another_account(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        attacker = await register(c, engine, data={"attacker": True})
    async with bare_client(app) as victim:
        guest = await new_guest(victim)
        await victim.put("/v1/me/data", json={"diary": "private"})
        # A sibling subdomain plants a CSRF cookie of its choosing (under every name the service
        # might read) and posts the login form with a token computed from it.
        planted = secrets.token_urlsafe(32)
        for name in ("anonid_session_csrf", "__Host-anonid_session_csrf"):
            victim.cookies.set(name, planted, domain="anonid.test")
        r = await victim.post(
            "/account/login",
            data={
                "csrf": _old_style_token(planted, "login"),
                "email": attacker["email"],
                "password": PASSWORD,
            },
        )
        assert r.status_code == 403 and "did not come from this site" in r.text
        assert "anonid_session=" not in r.headers.get("set-cookie", "")
        me = (await victim.get("/v1/me")).json()
        assert me["id"] == guest["id"] and me["data"] == {"diary": "private"}
    async with engine.connect() as conn:
        attacker_data = await conn.scalar(
            sa.text("SELECT data FROM users WHERE id = :id"), {"id": attacker["id"]}
        )
    assert attacker_data == {"attacker": True}


async def test_a_form_token_for_one_session_does_not_work_for_another(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
    async with bare_client(app) as someone:
        other_guest = await new_guest(someone)
        other_session = someone.cookies["anonid_session"]
    async with bare_client(app) as browser:
        await new_guest(browser)
        page = await browser.get("/account/login")
        login = {"csrf": _csrf(page), "email": account["email"], "password": PASSWORD}
        # The same browser secret and token, but another session (or none) than the page's.
        browser.cookies.set("anonid_session", other_session, domain="anonid.test")
        r = await browser.post("/account/login", data=login)
        assert r.status_code == 403 and "did not come from this site" in r.text
        browser.cookies.delete("anonid_session")
        browser.cookies.delete("anonid_refresh")
        r = await browser.post("/account/login", data=login)
        assert r.status_code == 403
    async with engine.connect() as conn:
        still_there = await conn.scalar(
            sa.text("SELECT is_anonymous FROM users WHERE id = :id"), {"id": other_guest["id"]}
        )
    assert still_there is True


async def test_form_tokens_hold_across_processes_sharing_the_database(
    app: FastAPI, app_with: AppFactory, engine: AsyncEngine
) -> None:
    # Each process loads the one server secret: a form served by one is accepted by another.
    async with bare_client(app) as c:
        account = await register(c, engine)
    other, _ = await app_with()
    async with bare_client(app) as first, bare_client(other) as second:
        page = await first.get("/account/login")
        for name, value in first.cookies.items():
            second.cookies.set(name, value, domain="anonid.test")
        r = await second.post(
            "/account/login",
            data={"csrf": _csrf(page), "email": account["email"], "password": PASSWORD},
        )
        assert r.status_code == 200, r.text


def _csrf_set_cookie(page: httpx.Response) -> str:
    found = [v for v in page.headers.get_list("set-cookie") if "_csrf=" in v]
    assert len(found) == 1, page.headers
    return found[0]


async def test_the_csrf_cookie_is_a_host_cookie_when_cookies_are_secure(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    _, secure = await app_with(cookie_domain="anonid.test")
    page = await secure.get("/account/login")
    cookie = _csrf_set_cookie(page)
    assert cookie.startswith("__Host-anonid_session_csrf=")
    attributes = [a.strip().lower() for a in cookie.split(";")[1:]]
    assert "secure" in attributes and "path=/" in attributes and "httponly" in attributes
    assert not [a for a in attributes if a.startswith("domain=")]
    # A plain-named cookie (which a sibling subdomain could set) is not the form secret.
    planted = secure.cookies["__Host-anonid_session_csrf"]
    secure.cookies.clear()
    secure.cookies.set("anonid_session_csrf", planted, domain="anonid.test")
    r = await secure.post("/account/reset", data={"csrf": _csrf(page), "email": fresh_email()})
    assert r.status_code == 403


async def test_forms_work_end_to_end_with_plain_cookies_when_not_secure(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    insecure_app, _ = await app_with(cookie_secure=False)
    async with bare_client(insecure_app) as c:
        account = await register(c, engine)
    async with bare_client(insecure_app) as browser:
        guest = await new_guest(browser)
        await browser.put("/v1/me/data", json={"guest": 1})
        page = await browser.get("/account/login")
        cookie = _csrf_set_cookie(page)
        assert cookie.startswith("anonid_session_csrf=") and "Path=/account" in cookie
        assert "secure" not in cookie.lower()
        r = await browser.post(
            "/account/login",
            data={"csrf": _csrf(page), "email": account["email"], "password": PASSWORD},
        )
        assert r.status_code == 200, r.text
        me = (await browser.get("/v1/me")).json()
    assert me["id"] == account["id"] and me["data"] == {"guest": 1}
    assert guest["id"] != account["id"]


async def test_a_hosted_form_posted_from_its_own_no_referrer_page_passes_the_guard(
    app: FastAPI, engine: AsyncEngine
) -> None:
    # Under Referrer-Policy: no-referrer browsers send "Origin: null" with the page's own posts.
    async with bare_client(app) as c:
        account = await register(c, engine)
    async with bare_client(app) as browser:
        page = await browser.get("/account/login")
        r = await browser.post(
            "/account/login",
            data={"csrf": _csrf(page), "email": account["email"], "password": PASSWORD},
            headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"},
        )
        assert r.status_code == 200, r.text
