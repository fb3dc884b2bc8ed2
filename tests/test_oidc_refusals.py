"""Provider sign-ins that must fail (CONTRACT §13): each ends at ``return_to?error=<code>`` (or the
login page for a bad state) with no row changed, never a 5xx. Against a real oidc-provider."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.account_support import register
from tests.conftest import AppFactory
from tests.oidc_app import (
    SHOP,
    browser,
    identities_of,
    new_guest,
    oidc_app,
    oidc_overrides,
    provider,
    sign_in_with,
    user_row,
)
from tests.oidc_support import (
    Provider,
    callback_url,
    drive,
    fingerprint,
    login_name,
    new_signing_key,
    rewrite_query,
)

__all__ = ["oidc_app", "provider"]

LOGIN_ERROR = "https://anonid.test/account/login?error={}"


async def _to_callback(c: httpx.AsyncClient, login: str, return_to: str | None = None) -> str:
    """The callback URL the provider sends the browser to, not yet visited."""
    params = {"return_to": return_to} if return_to else {}
    first = await c.get("/v1/oauth/op/authorize", params=params)
    assert first.status_code == 302, first.text
    return callback_url(await drive(c, first, login, stop_at_callback=True))


async def test_a_replayed_state_is_refused_and_changes_nothing(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    async with browser(oidc_app) as c:
        await new_guest(c)
        url = await _to_callback(c, login_name("v"))
        assert (await c.get(url)).headers["location"] == f"{SHOP}/"
        before = await fingerprint(engine)
        replay = await c.get(url)
    assert replay.status_code == 303
    assert replay.headers["location"] == LOGIN_ERROR.format("invalid_state")
    assert "set-cookie" not in replay.headers
    assert await fingerprint(engine) == before


async def test_a_callback_in_another_browser_is_refused_and_the_flow_stays_its_browsers(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    """Login CSRF: a callback URL handed to someone else's browser signs nobody in."""
    async with browser(oidc_app) as attacker, browser(oidc_app) as victim:
        guest = await new_guest(victim)
        url = await _to_callback(attacker, login_name("v"))
        before = await fingerprint(engine)
        r = await victim.get(url)
        assert r.headers["location"] == LOGIN_ERROR.format("invalid_state")
        assert await fingerprint(engine) == before
        assert (await victim.get("/v1/me")).json()["id"] == guest["id"]
        # Its own browser can still finish it.
        assert (await attacker.get(url)).headers["location"] == f"{SHOP}/"


async def test_an_expired_state_is_refused(oidc_app: FastAPI, engine: AsyncEngine) -> None:
    async with browser(oidc_app) as c:
        guest = await new_guest(c)
        url = await _to_callback(c, login_name("v"))
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("UPDATE oauth_flows SET expires_at = now() - interval '1 s'")
            )
        before = await fingerprint(engine)
        r = await c.get(url)
    assert r.headers["location"] == LOGIN_ERROR.format("invalid_state")
    assert await fingerprint(engine) == before
    assert (await user_row(engine, guest["id"])).is_anonymous


async def test_an_unknown_or_missing_state_goes_to_the_login_page(oidc_app: FastAPI) -> None:
    async with browser(oidc_app) as c:
        for query in ("?code=x&state=made-up", "?code=x", "", "?error=access_denied"):
            r = await c.get("/v1/oauth/op/callback" + query)
            assert r.status_code == 303
            assert r.headers["location"] == LOGIN_ERROR.format("invalid_state")
        page = await c.get(r.headers["location"])
    assert page.status_code == 200 and "expired or was already used" in page.text


async def test_a_wrong_nonce_is_refused_and_changes_nothing(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    async with browser(oidc_app) as c:
        guest = await new_guest(c)
        before = await fingerprint(engine)
        r = await sign_in_with(
            c, login_name("v"), tamper=lambda url: rewrite_query(url, nonce="not-the-nonce")
        )
    assert r.status_code == 303
    assert r.headers["location"] == f"{SHOP}/?error=invalid_id_token"
    assert "set-cookie" not in r.headers
    assert await fingerprint(engine) == before
    assert (await user_row(engine, guest["id"])).is_anonymous


async def test_a_tampered_pkce_challenge_fails_the_code_exchange(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    async with browser(oidc_app) as c:
        await new_guest(c)
        before = await fingerprint(engine)
        r = await sign_in_with(
            c,
            login_name("v"),
            tamper=lambda url: rewrite_query(url, code_challenge="A" * 43),
        )
    assert r.headers["location"] == f"{SHOP}/?error=provider_error"
    assert await fingerprint(engine) == before


async def test_cancelling_at_the_provider_ends_with_access_denied(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    async with browser(oidc_app) as c:
        await new_guest(c)
        before = await fingerprint(engine)
        r = await sign_in_with(c, login_name("v"), return_to=f"{SHOP}/cart#top", cancel=True)
    assert r.status_code == 303
    assert r.headers["location"] == f"{SHOP}/cart?error=access_denied#top"
    assert await fingerprint(engine) == before


async def test_a_provider_error_or_a_mixed_up_issuer_ends_with_provider_error(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    async with browser(oidc_app) as c:
        await new_guest(c)
        for extra in ("error=server_error", "iss=https%3A%2F%2Fevil.example"):
            url = await _to_callback(c, login_name("v"))
            before = await fingerprint(engine)
            r = await c.get(url + "&" + extra)
            assert r.headers["location"] == f"{SHOP}/?error=provider_error", extra
            assert await fingerprint(engine) == before


@pytest.mark.parametrize(
    "return_to",
    [
        "https://evil.example/",
        "//evil.example/",
        "https://shop.test.evil.example/",
        "https://evil.example/https://shop.test/",
        "https://shop.test@evil.example/",
        "https://user:pw@shop.test/",
        "https://evil.example\\@shop.test/",
        "https:\\\\evil.example",
        "/\\evil.example",
        "javascript:alert(1)",
        "data:text/html,hi",
        "ftp://shop.test/",
        "https://shop.test:8443/",
        "http://shop.test/",
        "https://shop.test\t.evil/",
        "https:evil.example",
    ],
)
async def test_return_to_off_the_allowed_origins_is_refused_before_anything(
    oidc_app: FastAPI, engine: AsyncEngine, return_to: str
) -> None:
    async with browser(oidc_app) as c:
        before = await fingerprint(engine)
        async with engine.connect() as conn:
            flows = await conn.scalar(sa.text("SELECT count(*) FROM oauth_flows"))
        r = await c.get("/v1/oauth/op/authorize", params={"return_to": return_to})
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text("SELECT count(*) FROM oauth_flows")) == flows
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_return_to"
    assert await fingerprint(engine) == before


async def test_an_unknown_provider_is_not_found_everywhere(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    before = await fingerprint(engine)
    async with browser(oidc_app) as c:
        assert (await c.get("/v1/oauth/nope/authorize")).status_code == 404
        assert (await c.get("/v1/oauth/nope/callback?code=a&state=b")).status_code == 404
        r = await c.post("/v1/oauth/nope/token", json={"id_token": "x.y.z"})
        assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert await fingerprint(engine) == before


async def test_the_same_state_redeemed_by_eight_concurrent_callbacks_succeeds_once(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    async with browser(oidc_app) as c:
        guest = await new_guest(c, {"n": 1})
        url = await _to_callback(c, login_name("v"))
        answers = await asyncio.gather(*(c.get(url) for _ in range(8)))
    locations = sorted(r.headers["location"] for r in answers)
    assert [r.status_code for r in answers] == [303] * 8
    assert locations.count(f"{SHOP}/") == 1
    assert locations.count(LOGIN_ERROR.format("invalid_state")) == 7
    assert sum("anonid_session=" in r.headers.get("set-cookie", "") for r in answers) == 1
    assert len(await identities_of(engine, guest["id"])) == 1
    assert not (await user_row(engine, guest["id"])).is_anonymous


async def test_two_first_sign_ins_with_one_identity_at_once_make_one_account(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    login = login_name("v")
    async with browser(oidc_app) as a, browser(oidc_app) as b:
        urls = [await _to_callback(a, login), await _to_callback(b, login)]
        answers = await asyncio.gather(a.get(urls[0]), b.get(urls[1]))
        assert [r.headers["location"] for r in answers] == [f"{SHOP}/"] * 2
        ids = {(await a.get("/v1/me")).json()["id"], (await b.get("/v1/me")).json()["id"]}
    assert len(ids) == 1
    async with engine.connect() as conn:
        owners = await conn.scalar(
            sa.text("SELECT count(*) FROM identities WHERE provider = 'op' AND subject = :s"),
            {"s": login},
        )
    assert owners == 1


async def test_a_rotated_provider_key_is_fetched_and_accepted(
    oidc_app: FastAPI, provider: Provider
) -> None:
    async with browser(oidc_app) as c:
        await new_guest(c)
        assert (await sign_in_with(c, login_name("v"))).headers["location"] == f"{SHOP}/"
    old = provider.keys
    provider.restart([new_signing_key(), *old])  # signs with the new key from now on
    try:
        fetched = provider.jwks_fetches()
        async with browser(oidc_app) as c:
            await new_guest(c)
            r = await sign_in_with(c, login_name("v"))
        assert r.headers["location"] == f"{SHOP}/"
        assert provider.jwks_fetches() == fetched + 1  # the unknown kid refetched the key set
    finally:
        provider.restart(old)


async def test_an_id_token_signed_by_another_key_under_a_known_kid_is_refused(
    oidc_app: FastAPI, provider: Provider, engine: AsyncEngine
) -> None:
    async with browser(oidc_app) as c:
        await new_guest(c)
        assert (await sign_in_with(c, login_name("v"))).headers["location"] == f"{SHOP}/"
    old = provider.keys
    provider.restart([new_signing_key(kid=old[0]["kid"])])  # same kid, other key material
    try:
        async with browser(oidc_app) as c:
            guest = await new_guest(c)
            before = await fingerprint(engine)
            r = await sign_in_with(c, login_name("v"))
        assert r.headers["location"] == f"{SHOP}/?error=invalid_id_token"
        assert await fingerprint(engine) == before
        assert (await user_row(engine, guest["id"])).is_anonymous
    finally:
        provider.restart(old)


async def test_an_unreachable_provider_ends_with_provider_error(
    app_with: AppFactory, provider: Provider, engine: AsyncEngine
) -> None:
    overrides = oidc_overrides(provider)
    overrides["oidc"] = {**overrides["oidc"], "op_issuer": "http://127.0.0.1:9"}
    app, _ = await app_with(**overrides)
    async with browser(app) as c:
        before = await fingerprint(engine)
        r = await c.get("/v1/oauth/op/authorize", params={"return_to": f"{SHOP}/x"})
    assert r.status_code == 303
    assert r.headers["location"] == f"{SHOP}/x?error=provider_error"
    assert await fingerprint(engine) == before


async def test_a_registered_user_whose_session_ended_meanwhile_changes_nothing(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    async with browser(oidc_app) as c:
        account = await register(c, engine)
        url = await _to_callback(c, login_name("v"))
        assert (await c.post("/v1/logout-all")).status_code == 204
        before = await fingerprint(engine)
        r = await c.get(url)
    assert r.headers["location"] == f"{SHOP}/?error=invalid_state"
    assert await fingerprint(engine) == before
    assert await identities_of(engine, account["id"]) == []


async def test_a_discovery_document_naming_another_issuer_is_refused(
    app_with: AppFactory, provider: Provider, engine: AsyncEngine
) -> None:
    """OpenID Connect Discovery §4.3: the document must name exactly the configured issuer."""
    overrides = oidc_overrides(provider)
    overrides["oidc"] = {**overrides["oidc"], "op_issuer": provider.issuer + "/"}
    app, _ = await app_with(**overrides)
    async with browser(app) as c:
        before = await fingerprint(engine)
        r = await c.get("/v1/oauth/op/authorize")
    assert r.status_code == 303
    assert r.headers["location"] == f"{SHOP}/?error=provider_error"
    assert await fingerprint(engine) == before
