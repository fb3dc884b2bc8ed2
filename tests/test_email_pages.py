"""Hosted pages of email codes and links (CONTRACT §6, §15): a link opened by ``GET`` changes
nothing (mail scanners follow links) and shows one button; the setup page offers "Save without a
password"; the login page emails a code."""

from __future__ import annotations

import re
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.account_support import (
    ask_login_code,
    bare_client,
    expire_links,
    fresh_email,
    last_code,
    new_guest,
    outbox_emails,
    register,
    register_without_password,
    request_conversion,
)

FORM = re.compile(
    r'<form method="post" action="([^"]+)"[^>]*>\s*(?:<label[^>]*>[^<]*</label>\s*)?'
    r'<input type="hidden" name="csrf" value="([^"]+)"'
)


def _forms(page: httpx.Response) -> dict[str, str]:
    """Each form's action and its CSRF token."""
    return dict(FORM.findall(page.text))


def _assert_page(r: httpx.Response, status: int = 200) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-store"
    # No script of its own (a passkey form may load anonid's helper file, never inline code).
    assert "<script>" not in r.text


def _session_cookies(r: httpx.Response) -> list[str]:
    return [c.split("=", 1)[0] for c in r.headers.get_list("set-cookie") if "_csrf" not in c]


async def _link_state(engine: AsyncEngine, user_id: str, purpose: str) -> list[tuple]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT used_at IS NULL, code_hash IS NOT NULL FROM link_tokens"
                " WHERE user_id = :id AND purpose = :purpose"
            ),
            {"id": user_id, "purpose": purpose},
        )
        return [tuple(r) for r in rows]


async def _user(engine: AsyncEngine, user_id: str) -> sa.Row:
    async with engine.connect() as conn:
        return (
            await conn.execute(sa.text("SELECT * FROM users WHERE id = :id"), {"id": user_id})
        ).one()


async def test_a_link_opened_by_get_changes_nothing(app: FastAPI, engine: AsyncEngine) -> None:
    # Three kinds of emailed link, each opened (as a mail scanner would) before anyone acts.
    async with bare_client(app) as c:
        account = await register(c, engine)
        new = fresh_email("scanned")
        await c.post("/v1/me/email", json={"email": new})
        await c.post("/v1/login/email", json={"email": account["email"]})
    change_token, _ = await last_code(engine, new, "email_change")
    login_token, _ = await last_code(engine, account["email"], "login_code")
    async with bare_client(app) as guest_device:
        guest = await new_guest(guest_device)
        pending = fresh_email("scanned-setup")
        await request_conversion(guest_device, pending)
    setup_token, _ = await last_code(engine, pending, "conversion_setup")

    async def snapshot() -> dict[str, Any]:
        return {
            "account": await _user(engine, account["id"]),
            "guest": await _user(engine, guest["id"]),
            "links": [
                await _link_state(engine, account["id"], "email_change"),
                await _link_state(engine, account["id"], "login"),
                await _link_state(engine, guest["id"], "setup"),
            ],
        }

    before = await snapshot()

    async with bare_client(app) as scanner:
        pages = [
            await scanner.get(f"/account/email?token={change_token}"),
            await scanner.get(f"/account/email?token={login_token}"),
            await scanner.get(f"/account/email?token={setup_token}"),
            await scanner.get(f"/account/setup?token={setup_token}"),
        ]
        for page in pages:
            _assert_page(page)  # a page, never a redirect
            assert _session_cookies(page) == []
        assert "Confirm the address" in pages[0].text and new in pages[0].text
        assert "Log in" in pages[1].text and account["email"] in pages[1].text
        assert "Save my account" in pages[2].text
        for page in pages[:3]:
            assert list(_forms(page)) == ["/account/email"]  # one button
        assert "Save without a password" in pages[3].text

    after = await snapshot()
    assert after == before
    assert after["account"].email == account["email"] and after["guest"].is_anonymous
    assert all(state == [(True, True)] for state in after["links"])

    # The button does what the link is for.
    async with bare_client(app) as browser:
        page = await browser.get(f"/account/email?token={change_token}")
        done = await browser.post(
            "/account/email",
            data={"csrf": _forms(page)["/account/email"], "token": change_token},
        )
        _assert_page(done)
        assert new in done.text and _session_cookies(done) == []
    assert (await _user(engine, account["id"])).email == new


async def test_the_sign_in_link_page_signs_in_this_browser_and_brings_its_guest_along(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register_without_password(c, engine)
        token, _ = await ask_login_code(c, engine, account["email"])
    async with bare_client(app) as browser:
        guest = await new_guest(browser)
        await browser.put("/v1/me/data", json={"from_guest": 1})
        page = await browser.get(f"/account/email?token={token}")
        done = await browser.post(
            "/account/email", data={"csrf": _forms(page)["/account/email"], "token": token}
        )
        _assert_page(done)
        assert _session_cookies(done) == ["anonid_session", "anonid_refresh"]
        me = (await browser.get("/v1/me")).json()
        assert me["id"] == account["id"] and me["data"] == {"from_guest": 1}
        again = await browser.post(
            "/account/email", data={"csrf": _forms(page)["/account/email"], "token": token}
        )
        _assert_page(again, 400)
    async with engine.connect() as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM users WHERE id = :id"), guest) == 0


async def test_the_email_link_page_refuses_a_missing_csrf_token_and_dead_links(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
        token, _ = await ask_login_code(c, engine, account["email"])
    async with bare_client(app) as browser:
        page = await browser.get(f"/account/email?token={token}")
        r = await browser.post("/account/email", data={"csrf": "forged", "token": token})
        _assert_page(r, 403)
        assert _session_cookies(r) == []
        for dead in ("unknown", ""):
            _assert_page(await browser.get(f"/account/email?token={dead}"), 400)
        # A reset link is for the reset page only.
        await browser.post("/v1/password-reset", json={"email": account["email"]})
        [reset] = await outbox_emails(engine, account["email"], "password_reset")
        reset_token = reset["text"].split("token=", 1)[1].split()[0]
        _assert_page(await browser.get(f"/account/email?token={reset_token}"), 400)
        await expire_links(engine, account["id"], "login")
        expired = await browser.post(
            "/account/email", data={"csrf": _forms(page)["/account/email"], "token": token}
        )
        _assert_page(expired, 410)


async def test_save_without_a_password_on_the_setup_page(app: FastAPI, engine: AsyncEngine) -> None:
    async with bare_client(app) as guest_device:
        guest = await new_guest(guest_device)
        await guest_device.put("/v1/me/data", json={"kept": True})
        email = fresh_email("nopassword-page")
        await request_conversion(guest_device, email)
    token, _ = await last_code(engine, email, "conversion_setup")
    async with bare_client(app) as browser:
        page = await browser.get(f"/account/setup?token={token}")
        csrf = _forms(page)["/account/setup"]
        assert 'name="without_password" value="1"' in page.text
        done = await browser.post(
            "/account/setup", data={"csrf": csrf, "token": token, "without_password": "1"}
        )
        _assert_page(done)
        assert _session_cookies(done) == ["anonid_session", "anonid_refresh"]
        me = (await browser.get("/v1/me")).json()
        assert me["id"] == guest["id"] and me["data"] == {"kept": True}
        assert me["methods"] == ["email"]
    row = await _user(engine, guest["id"])
    assert row.password_hash is None and not row.is_anonymous


async def test_the_login_page_emails_a_code_and_takes_it(app: FastAPI, engine: AsyncEngine) -> None:
    async with bare_client(app) as c:
        account = await register_without_password(c, engine)
    async with bare_client(app) as browser:
        login = await browser.get("/account/login")
        forms = {"/account/login/email": _forms(login)["/account/login"]}
        # One form, one address field: its second button posts it here instead.
        assert login.text.count('name="email"') == 1
        assert 'formaction="/account/login/email" formnovalidate>Email me a code<' in login.text
        # An unknown address gets the same page, and no email.
        ghost = fresh_email("page-ghost")
        unknown = await browser.post(
            "/account/login/email", data={"csrf": forms["/account/login/email"], "email": ghost}
        )
        sent = await browser.post(
            "/account/login/email",
            data={"csrf": forms["/account/login/email"], "email": account["email"]},
        )
        for page in (unknown, sent):
            _assert_page(page)
            assert "a code and a link to log in are on their way" in page.text
        assert unknown.text.replace(ghost, "@") == sent.text.replace(account["email"], "@")
        assert await outbox_emails(engine, ghost) == []
        _, code = await last_code(engine, account["email"], "login_code")
        code_form = _forms(sent)["/account/login/code"]
        wrong = await browser.post(
            "/account/login/code",
            data={"csrf": code_form, "email": account["email"], "code": "000000"},
        )
        _assert_page(wrong, 400)
        assert "not valid" in wrong.text
        done = await browser.post(
            "/account/login/code",
            data={"csrf": code_form, "email": account["email"], "code": code},
        )
        _assert_page(done)
        assert _session_cookies(done) == ["anonid_session", "anonid_refresh"]
        assert (await browser.get("/v1/me")).json()["id"] == account["id"]
        bad = await browser.post(
            "/account/login/email",
            data={
                "csrf": _forms(await browser.get("/account/login"))["/account/login"],
                "email": "not an address",
            },
        )
        _assert_page(bad, 422)


async def test_email_pages_speak_the_visitors_language(app: FastAPI, engine: AsyncEngine) -> None:
    async with bare_client(app) as c:
        account = await register(c, engine)
        await c.post(
            "/v1/login/email", json={"email": account["email"]}, headers={"Accept-Language": "de"}
        )
    [sent] = await outbox_emails(engine, account["email"], "login_code")
    assert sent["language"] == "de" and "Code" in sent["subject"]
    token, _ = await last_code(engine, account["email"], "login_code")
    async with bare_client(app) as browser:
        page = await browser.get(f"/account/email?token={token}&lang=fr")
        assert '<html lang="fr">' in page.text and "Se connecter" in page.text
        login = await browser.get("/account/login?lang=es")
        assert "Envíame un código" in login.text
