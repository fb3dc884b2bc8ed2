"""The four cases of CONTRACT §13, and TRUST_EMAIL on and off, through a real OpenID Provider
(oidc-provider): httpx follows the real redirects and fills in the provider's own forms."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.account_support import register
from tests.oidc_app import (
    SHOP,
    browser,
    events_of,
    identities_of,
    new_guest,
    oidc_app,
    provider,
    sign_in_with,
    user_row,
)
from tests.oidc_support import login_name

__all__ = ["oidc_app", "provider"]

DONE = "https://anonid.test/account/login"


def _signed_in(r: httpx.Response, return_to: str) -> str:
    """The callback's success: 303 to return_to (no error) with the session cookie."""
    assert r.status_code == 303, r.text
    assert r.headers["location"] == return_to
    assert "anonid_session=" in r.headers.get("set-cookie", "")
    assert r.headers["cache-control"] == "no-store"
    return r.headers["location"]


async def test_a_guest_is_registered_in_place_with_its_data_and_the_verified_address(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    login = login_name("v")
    async with browser(oidc_app) as c:
        guest = await new_guest(c, {"favourites": {"teapot": True}})
        old_cookie = c.cookies["anonid_session"]
        r = await sign_in_with(c, login, return_to=f"{SHOP}/account?tab=1")
        _signed_in(r, f"{SHOP}/account?tab=1")
        me = (await c.get("/v1/me")).json()
    assert me["id"] == guest["id"]
    assert me["state"] == "registered" and me["is_anonymous"] is False
    assert me["email"] == f"{login}@example.com" and me["email_verified"] is True
    assert me["username"] is None
    assert me["data"] == {"favourites": {"teapot": True}}
    row = await user_row(engine, guest["id"])
    assert row.converted_at is not None and row.session_version == 2
    [identity] = await identities_of(engine, guest["id"])
    assert (identity.provider, identity.subject) == ("op", login)
    assert identity.email == f"{login}@example.com" and identity.email_verified is True
    events = await events_of(engine, guest["id"])
    assert ("user.converted", {"id": guest["id"], "method": "oidc"}) in events
    assert ("user.identity_linked", {"id": guest["id"], "provider": "op"}) in events
    # The guest's token stopped working: conversion bumps the session version.
    async with browser(oidc_app) as other:
        other.cookies.set("anonid_session", old_cookie, domain="anonid.test")
        assert (await other.get("/v1/me")).status_code == 401


async def test_nobody_signing_in_gets_a_new_registered_account_with_the_identity(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    login = login_name("v")
    async with browser(oidc_app) as c:
        r = await sign_in_with(c, login)
        _signed_in(r, f"{SHOP}/")  # the first allowed origin when return_to is not given
        me = (await c.get("/v1/me")).json()
    assert me["state"] == "registered" and me["data"] == {}
    assert me["email"] == f"{login}@example.com"
    assert [i.subject for i in await identities_of(engine, me["id"])] == [login]
    assert await events_of(engine, me["id"]) == [
        ("user.identity_linked", {"id": me["id"], "provider": "op"})
    ]


async def test_a_linked_identity_signs_in_to_its_account_and_merges_the_guest(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    login = login_name("v")
    async with browser(oidc_app) as first:
        await new_guest(first, {"favourites": {"lamp": True}, "theme": "dark"})
        _signed_in(await sign_in_with(first, login), f"{SHOP}/")
        account = (await first.get("/v1/me")).json()
    async with browser(oidc_app) as second:
        guest = await new_guest(second, {"favourites": {"kettle": True}, "theme": "light"})
        _signed_in(await sign_in_with(second, login), f"{SHOP}/")
        me = (await second.get("/v1/me")).json()
    assert me["id"] == account["id"]
    assert me["data"] == {"favourites": {"lamp": True, "kettle": True}, "theme": "dark"}
    assert await user_row(engine, guest["id"]) is None
    events = await events_of(engine, account["id"])
    assert ("user.merged", {"from": guest["id"], "into": account["id"]}) in events
    # Still one identity, one account.
    assert len(await identities_of(engine, account["id"])) == 1


async def test_nobody_signing_in_with_a_linked_identity_signs_in_without_changes(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    login = login_name("n")
    async with browser(oidc_app) as first:
        _signed_in(await sign_in_with(first, login), f"{SHOP}/")
        account = (await first.get("/v1/me")).json()
    assert account["email"] is None and account["state"] == "registered"
    async with browser(oidc_app) as second:
        _signed_in(await sign_in_with(second, login), f"{SHOP}/")
        assert (await second.get("/v1/me")).json()["id"] == account["id"]


async def test_a_registered_user_links_an_identity_and_it_is_listed(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    login = login_name("v")
    async with browser(oidc_app) as c:
        account = await register(c, engine)
        r = await sign_in_with(c, login, return_to="/account/security")
        assert r.status_code == 303
        assert r.headers["location"] == "https://anonid.test/account/security"
        listed = (await c.get("/v1/me/identities")).json()["identities"]
        me = (await c.get("/v1/me")).json()
    assert me["id"] == account["id"] and me["email"] == account["email"]  # the address stays
    assert [(i["provider"], i["subject"], i["email"]) for i in listed] == [
        ("op", login, f"{login}@example.com")
    ]
    assert set(listed[0]) == {"id", "provider", "subject", "email", "created_at"}
    assert ("user.identity_linked", {"id": account["id"], "provider": "op"}) in await events_of(
        engine, account["id"]
    )


async def test_an_identity_of_another_account_is_not_linked(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    from tests.oidc_support import fingerprint

    login = login_name("v")
    async with browser(oidc_app) as owner:
        _signed_in(await sign_in_with(owner, login), f"{SHOP}/")
    async with browser(oidc_app) as c:
        account = await register(c, engine)
        before = await fingerprint(engine)
        r = await sign_in_with(c, login, return_to=f"{SHOP}/settings")
        assert r.status_code == 303
        assert r.headers["location"] == f"{SHOP}/settings?error=identity_taken"
        assert "set-cookie" not in r.headers
        assert await fingerprint(engine) == before
        assert (await c.get("/v1/me")).json()["id"] == account["id"]


async def test_a_verified_address_of_another_account_is_not_taken_without_trust(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    login = login_name("v")
    async with browser(oidc_app) as owner_client:
        owner = await register(owner_client, engine, email=f"{login}@example.com")
    async with browser(oidc_app) as c:
        guest = await new_guest(c, {"k": 1})
        _signed_in(await sign_in_with(c, login, provider="op"), f"{SHOP}/")
        me = (await c.get("/v1/me")).json()
    # Registered in place, without an address: the address stays its owner's.
    assert me["id"] == guest["id"] and me["state"] == "registered"
    assert me["email"] is None and me["email_verified"] is False
    assert (await user_row(engine, owner["id"])).email == f"{login}@example.com"


async def test_an_unverified_address_is_never_taken(oidc_app: FastAPI, engine: AsyncEngine) -> None:
    login = login_name("u")
    async with browser(oidc_app) as c:
        guest = await new_guest(c)
        _signed_in(await sign_in_with(c, login, provider="trusted"), f"{SHOP}/")
        me = (await c.get("/v1/me")).json()
    assert me["id"] == guest["id"] and me["email"] is None
    [identity] = await identities_of(engine, guest["id"])
    assert identity.email == f"{login}@example.com" and identity.email_verified is False


@pytest.mark.parametrize("with_guest", [True, False])
async def test_trust_email_signs_in_to_the_account_with_the_verified_address(
    oidc_app: FastAPI, engine: AsyncEngine, with_guest: bool
) -> None:
    login = login_name("v")
    async with browser(oidc_app) as owner_client:
        owner = await register(owner_client, engine, email=f"{login}@example.com", data={"a": 1})
    async with browser(oidc_app) as c:
        guest = await new_guest(c, {"b": 2}) if with_guest else None
        _signed_in(await sign_in_with(c, login, provider="trusted"), f"{SHOP}/")
        me = (await c.get("/v1/me")).json()
    assert me["id"] == owner["id"]
    assert me["data"] == ({"a": 1, "b": 2} if with_guest else {"a": 1})
    assert [(i.provider, i.subject) for i in await identities_of(engine, owner["id"])] == [
        ("trusted", login)
    ]
    if guest is not None:
        assert await user_row(engine, guest["id"]) is None


async def test_trust_email_with_an_unverified_address_registers_the_guest_instead(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    login = login_name("u")
    async with browser(oidc_app) as owner_client:
        owner = await register(owner_client, engine, email=f"{login}@example.com")
    async with browser(oidc_app) as c:
        guest = await new_guest(c)
        _signed_in(await sign_in_with(c, login, provider="trusted"), f"{SHOP}/")
        me = (await c.get("/v1/me")).json()
    assert me["id"] == guest["id"] != owner["id"]
    assert await identities_of(engine, owner["id"]) == []


async def test_the_callback_accepts_the_form_post_response_mode(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    login = login_name("v")
    async with browser(oidc_app) as c:
        guest = await new_guest(c)
        r = await sign_in_with(c, login, provider="op-post")
        assert r.request.method == "POST"
        _signed_in(r, f"{SHOP}/")
        assert (await c.get("/v1/me")).json()["id"] == guest["id"]


async def test_nobody_with_an_unverified_address_gets_an_account_without_one(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    login = login_name("u")
    async with browser(oidc_app) as c:
        _signed_in(await sign_in_with(c, login), f"{SHOP}/")
        me = (await c.get("/v1/me")).json()
    assert me["email"] is None and me["state"] == "registered"
    [identity] = await identities_of(engine, me["id"])
    assert identity.email == f"{login}@example.com" and identity.email_verified is False
