"""Passkeys on the hosted pages (CONTRACT §15): "Sign in with a passkey" on the login page, "Save
with a passkey" on the setup page, and ``/account/security``. Each is a plain form with its CSRF
token whose ``passkey`` field carries the browser's answer; anonid's one script file runs the
ceremony, and the pages' policy allows no other script. The ceremonies here are the software
authenticator's; ``tests/test_passkeys_browser.py`` clicks the same buttons in Chromium."""

from __future__ import annotations

import json
import re

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.account_support import bare_client, fresh_email, last_token, new_guest, register
from tests.conftest import AppFactory
from tests.oidc_app import events_of
from tests.passkey_support import (
    add_passkey,
    authenticator,
    creation_options,
    passkey_account,
    request_options,
)
from tests.test_pages import _csrf


def _policy(page: httpx.Response) -> str:
    return page.headers["content-security-policy"]


async def test_the_login_page_offers_a_passkey_with_anonids_own_script_only(app: FastAPI) -> None:
    async with bare_client(app) as browser:
        page = await browser.get("/account/login")
    assert page.status_code == 200
    assert 'data-passkey="get"' in page.text and "Sign in with a passkey" in page.text
    # One script, a file of anonid's own; nothing inline, nothing from elsewhere.
    assert re.findall(r"<script[^>]*>", page.text) == [
        '<script src="/account/assets/passkeys.js" defer>'
    ]
    assert "script-src 'self';" in _policy(page) and "connect-src 'self';" in _policy(page)
    assert "default-src 'none'" in _policy(page) and "unsafe-inline'; img-src" in _policy(page)


async def test_under_an_ip_address_no_page_offers_a_passkey(app_with: AppFactory) -> None:
    # Browsers refuse an IP address as the RP id: the pages stay free of script there.
    _, c = await app_with(public_url="http://127.0.0.1:8000")
    page = await c.get("/account/login")
    assert "data-passkey" not in page.text and "<script" not in page.text
    assert "script-src" not in _policy(page)


async def test_the_passkey_script_is_served_as_javascript(client: httpx.AsyncClient) -> None:
    r = await client.get("/account/assets/passkeys.js")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "window.anonidPasskeys" in r.text and "navigator.credentials.get" in r.text


async def test_signing_in_with_a_passkey_on_the_login_page_merges_the_guest(
    app: FastAPI, engine: AsyncEngine
) -> None:
    device = authenticator()
    async with bare_client(app) as owner:
        account = await passkey_account(owner, device, data={"favourites": {"mug": True}})
    async with bare_client(app) as browser:
        guest = await new_guest(browser)
        await browser.put("/v1/me/data", json={"favourites": {"socks": True}})
        page = await browser.get("/account/login")
        # The script asks for options (the challenge cookie binds them to this browser) and
        # posts the form with the answer.
        options, _ = await request_options(browser)
        done = await browser.post(
            "/account/login",
            data={"csrf": _csrf(page), "passkey": json.dumps(device.get(options))},
        )
        assert done.status_code == 200, done.text
        assert "You are logged in." in done.text and "anonid_session=" in done.headers["set-cookie"]
        me = (await browser.get("/v1/me")).json()
    assert me["id"] == account["id"]
    assert me["data"] == {"favourites": {"mug": True, "socks": True}}
    assert ("user.merged", {"from": guest["id"], "into": account["id"]}) in await events_of(
        engine, account["id"]
    )


async def test_a_refused_passkey_on_the_login_page_says_so_in_the_pages_language(
    app: FastAPI,
) -> None:
    device = authenticator()
    async with bare_client(app) as owner:
        await passkey_account(owner, device)
    async with bare_client(app) as browser:
        page = await browser.get("/account/login?lang=de")
        options, _ = await request_options(browser)
        foreign = device.get(options, origin="https://evil.test")
        refused = await browser.post(
            "/account/login?lang=de", data={"csrf": _csrf(page), "passkey": json.dumps(foreign)}
        )
        assert refused.status_code == 401
        assert "Der Passkey konnte nicht geprüft werden." in refused.text
        assert "anonid_session=" not in refused.headers.get("set-cookie", "")
        # A form without its CSRF token is refused before any passkey is looked at.
        options, _ = await request_options(browser)
        forged = await browser.post(
            "/account/login", data={"csrf": "x", "passkey": json.dumps(device.get(options))}
        )
        assert forged.status_code == 403


async def _pending(browser: httpx.AsyncClient, engine: AsyncEngine) -> tuple[dict, str, str]:
    guest = await new_guest(browser)
    await browser.put("/v1/me/data", json={"kept": True})
    email = fresh_email("passkey-setup")
    assert (await browser.post("/v1/me/conversion", json={"email": email})).status_code == 202
    return guest, email, await last_token(engine, email, "conversion_setup")


async def test_the_setup_page_saves_the_account_with_a_passkey_and_the_links_address(
    app: FastAPI, engine: AsyncEngine
) -> None:
    device = authenticator()
    async with bare_client(app) as browser, bare_client(app) as elsewhere:
        guest, email, token = await _pending(browser, engine)
        # Another browser (the link opened on another device) gets the password form only.
        assert "data-passkey" not in (await elsewhere.get(f"/account/setup?token={token}")).text
        page = await browser.get(f"/account/setup?token={token}")
        assert 'data-passkey="create"' in page.text and "Save with a passkey" in page.text
        assert "script-src 'self'" in _policy(page)
        credential = device.create(await creation_options(browser))
        done = await browser.post(
            "/account/setup",
            data={"csrf": _csrf(page), "token": token, "passkey": json.dumps(credential)},
        )
        assert done.status_code == 200, done.text
        assert "Your account is saved" in done.text and email in done.text
        me = (await browser.get("/v1/me")).json()
        assert me["id"] == guest["id"] and me["state"] == "registered"
        assert me["email"] == email and me["data"] == {"kept": True}
        assert len((await browser.get("/v1/me/passkeys")).json()["passkeys"]) == 1
        # The link is spent.
        assert (await browser.get(f"/account/setup?token={token}")).status_code == 400
    assert ("user.converted", {"id": guest["id"], "method": "passkey"}) in await events_of(
        engine, guest["id"]
    )


async def test_a_refused_passkey_on_the_setup_page_keeps_the_link_for_another_try(
    app: FastAPI, engine: AsyncEngine
) -> None:
    device = authenticator()
    async with bare_client(app) as browser:
        _, _, token = await _pending(browser, engine)
        page = await browser.get(f"/account/setup?token={token}")
        wrong = device.create(await creation_options(browser), origin="https://evil.test")
        refused = await browser.post(
            "/account/setup",
            data={"csrf": _csrf(page), "token": token, "passkey": json.dumps(wrong)},
        )
        assert refused.status_code == 400
        assert "The passkey could not be verified" in refused.text
        assert 'data-passkey="create"' in refused.text  # try again, same link
        assert (await browser.get("/v1/me")).json()["state"] == "pending"
        right = device.create(await creation_options(browser))
        done = await browser.post(
            "/account/setup",
            data={"csrf": _csrf(refused), "token": token, "passkey": json.dumps(right)},
        )
        assert done.status_code == 200, done.text


async def test_the_security_page_lists_renames_and_removes_passkeys(app: FastAPI) -> None:
    device = authenticator()
    async with bare_client(app) as browser:
        await passkey_account(browser, device)
        assert (await add_passkey(browser, device, name="Phone")).status_code == 201
        first, second = (await browser.get("/v1/me/passkeys")).json()["passkeys"]
        page = await browser.get("/account/security")
        assert page.status_code == 200 and "Passkey" in page.text and "Phone" in page.text
        assert 'data-passkey="create"' in page.text and "Add a passkey" in page.text
        csrf = _csrf(page)

        renamed = await browser.post(
            "/account/security",
            data={"csrf": csrf, "action": "rename", "passkey_id": first["id"], "name": "Laptop"},
        )
        assert renamed.status_code == 200 and "The passkey is renamed." in renamed.text
        assert "Laptop" in renamed.text
        removed = await browser.post(
            "/account/security",
            data={"csrf": csrf, "action": "remove", "passkey_id": first["id"]},
        )
        assert removed.status_code == 200 and "The passkey is removed." in removed.text
        last = await browser.post(
            "/account/security?lang=fr",
            data={"csrf": csrf, "action": "remove", "passkey_id": second["id"]},
        )
        assert last.status_code == 409 and "Phone" in last.text
        assert "dernier moyen de se connecter" in last.text
        forged = await browser.post(
            "/account/security",
            data={"csrf": "forged", "action": "remove", "passkey_id": second["id"]},
        )
        assert forged.status_code == 403
        assert [p["id"] for p in (await browser.get("/v1/me/passkeys")).json()["passkeys"]] == [
            second["id"]
        ]


async def test_a_guest_saves_its_account_with_a_passkey_on_the_security_page(
    app: FastAPI, engine: AsyncEngine
) -> None:
    device = authenticator()
    async with bare_client(app) as browser:
        guest = await new_guest(browser)
        page = await browser.get("/account/security")
        assert "You are browsing as a guest." in page.text and "Save with a passkey" in page.text
        credential = device.create(await creation_options(browser))
        saved = await browser.post(
            "/account/security",
            data={"csrf": _csrf(page), "action": "add", "passkey": json.dumps(credential)},
        )
        assert saved.status_code == 200, saved.text
        assert (
            "Your passkey is saved." in saved.text
            and "anonid_session=" in saved.headers["set-cookie"]
        )
        me = (await browser.get("/v1/me")).json()
        assert me["id"] == guest["id"] and me["state"] == "registered"
    assert ("user.converted", {"id": guest["id"], "method": "passkey"}) in await events_of(
        engine, guest["id"]
    )


async def test_the_security_page_without_a_session_shows_the_way_to_log_in(app: FastAPI) -> None:
    async with bare_client(app) as browser:
        page = await browser.get("/account/security")
        assert page.status_code == 200 and 'href="/account/login"' in page.text
        assert "data-passkey" not in page.text and "script-src" not in _policy(page)
        r = await browser.post(
            "/account/security", data={"csrf": "none", "action": "remove", "passkey_id": "x"}
        )
        assert r.status_code == 401


async def test_the_security_page_lists_the_sessions_and_signs_another_one_out(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as laptop, bare_client(app) as phone:
        account = await register(laptop, engine)
        login = {"email": account["email"], "password": account["password"]}
        assert (await phone.post("/v1/login", json=login)).status_code == 200
        sessions = (await laptop.get("/v1/me/sessions")).json()["sessions"]
        mine = next(s["id"] for s in sessions if s["current"])
        other = next(s["id"] for s in sessions if not s["current"])
        page = await laptop.get("/account/security")
        assert "This device" in page.text and f'value="{other}"' in page.text
        assert f'name="session_id" value="{mine}"' not in page.text  # "Log out" ends this one
        own = await laptop.post(
            "/account/security",
            data={"csrf": _csrf(page), "action": "end_session", "session_id": mine},
        )
        assert own.status_code == 404
        ended = await laptop.post(
            "/account/security",
            data={"csrf": _csrf(page), "action": "end_session", "session_id": other},
        )
        assert ended.status_code == 200 and "That session is ended." in ended.text
        assert f'value="{other}"' not in ended.text
        assert (await phone.get("/v1/me")).status_code == 401
        assert (await laptop.get("/v1/me")).status_code == 200
