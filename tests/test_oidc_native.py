"""``POST /v1/oauth/{provider}/token`` (CONTRACT §13): ID tokens a native app obtained itself,
verified against the real provider's JWKS. The test signs with the provider's own key (it made
it) to produce tokens the provider would not: expired, for another client, another issuer,
another key, a wrong nonce."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import OctKey
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.account_support import register
from tests.oidc_app import (
    browser,
    identities_of,
    new_guest,
    oidc_app,
    provider,
    user_row,
)
from tests.oidc_support import CLIENT_SECRET, Provider, fingerprint, login_name, new_signing_key

__all__ = ["oidc_app", "provider"]


def _claims(provider: Provider, subject: str, **overrides: Any) -> dict[str, Any]:
    return provider.id_token_claims(
        subject, email=f"{subject}@example.com", email_verified=True, **overrides
    )


async def _post(
    c: httpx.AsyncClient, token: str, nonce: str | None = None, **headers: str
) -> httpx.Response:
    body: dict[str, Any] = {"id_token": token}
    if nonce is not None:
        body["nonce"] = nonce
    return await c.post("/v1/oauth/op/token", json=body, headers=headers)


async def test_a_guest_is_registered_in_place_by_a_native_id_token(
    oidc_app: FastAPI, provider: Provider, engine: AsyncEngine
) -> None:
    subject = login_name("v")
    async with browser(oidc_app) as c:
        guest = await new_guest(c, {"k": 1})
        r = await _post(c, provider.sign(_claims(provider, subject)))
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        assert "anonid_session=" in r.headers["set-cookie"]
        body = r.json()
    assert body["user"]["id"] == guest["id"] and body["user"]["state"] == "registered"
    assert body["user"]["email"] == f"{subject}@example.com"
    assert "access_token" not in body  # a browser never sees a token in a body
    assert [i.subject for i in await identities_of(engine, guest["id"])] == [subject]


@pytest.mark.parametrize("hashed", [False, True])
async def test_the_nonce_is_accepted_raw_or_as_its_sha256_in_hex(
    oidc_app: FastAPI, provider: Provider, hashed: bool
) -> None:
    nonce = secrets.token_urlsafe(16)
    claim = hashlib.sha256(nonce.encode()).hexdigest() if hashed else nonce
    token = provider.sign(_claims(provider, login_name("v"), nonce=claim))
    async with browser(oidc_app) as c:
        r = await _post(c, token, nonce, **{"X-Anonid-Token": "bearer"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["access_token"]
    assert "set-cookie" not in r.headers


async def test_a_linked_identity_merges_the_guest_and_says_so(
    oidc_app: FastAPI, provider: Provider, engine: AsyncEngine
) -> None:
    subject = login_name("v")
    async with browser(oidc_app) as c:
        first = await _post(c, provider.sign(_claims(provider, subject)))
        account = first.json()["user"]
    async with browser(oidc_app) as c:
        guest = await new_guest(c, {"fav": {"a": True}})
        r = await _post(c, provider.sign(_claims(provider, subject)))
    assert r.status_code == 200
    assert r.json()["user"]["id"] == account["id"]
    assert r.json()["merged_from"] == guest["id"]
    assert r.json()["user"]["data"] == {"fav": {"a": True}}
    assert await user_row(engine, guest["id"]) is None


async def test_a_registered_session_does_not_link_through_the_native_endpoint(
    oidc_app: FastAPI, provider: Provider, engine: AsyncEngine
) -> None:
    async with browser(oidc_app) as c:
        account = await register(c, engine)
        r = await _post(c, provider.sign(_claims(provider, login_name("v"))))
    assert r.status_code == 200
    assert r.json()["user"]["id"] != account["id"]  # signed in to the identity's own account
    assert await identities_of(engine, account["id"]) == []


def _refusals(provider: Provider) -> dict[str, tuple[str, str | None]]:
    subject = login_name("v")
    now = int(time.time())
    nonce = "the-apps-nonce"
    foreign = new_signing_key()
    hmac_key = OctKey.import_key(CLIENT_SECRET.encode())
    return {
        "expired": (provider.sign(_claims(provider, subject, exp=now - 3600)), None),
        "another audience": (provider.sign(_claims(provider, subject, aud="someone-else")), None),
        "another issuer": (provider.sign(_claims(provider, subject, iss="http://evil")), None),
        "no subject": (provider.sign(_claims(provider, subject, sub=None)), None),
        "made-up key id": (provider.sign(_claims(provider, subject), key=foreign), None),
        "known kid, wrong key": (
            provider.sign(
                _claims(provider, subject), key={**foreign, "kid": provider.keys[0]["kid"]}
            ),
            None,
        ),
        "hmac with the client secret": (
            jwt.encode({"alg": "HS256"}, _claims(provider, subject), hmac_key),
            None,
        ),
        "unsigned": (
            provider.sign(_claims(provider, subject)).rsplit(".", 1)[0] + ".",
            None,
        ),
        "wrong nonce": (provider.sign(_claims(provider, subject, nonce="other")), nonce),
        "nonce in the token, none given": (
            provider.sign(_claims(provider, subject, nonce=nonce)),
            None,
        ),
        "nonce given, none in the token": (provider.sign(_claims(provider, subject)), nonce),
        "garbage": ("not-a-jwt", None),
    }


async def test_id_tokens_that_fail_verification_are_refused_and_change_nothing(
    oidc_app: FastAPI, provider: Provider, engine: AsyncEngine
) -> None:
    async with browser(oidc_app) as c:
        guest = await new_guest(c)
        for name, (token, nonce) in _refusals(provider).items():
            before = await fingerprint(engine)
            r = await _post(c, token, nonce)
            assert r.status_code == 401, (name, r.text)
            assert r.json()["error"] == "invalid_credentials", name
            assert await fingerprint(engine) == before, name
    assert (await user_row(engine, guest["id"])).is_anonymous


async def test_made_up_key_ids_do_not_turn_into_a_flood_of_jwks_fetches(
    app_with: Any, provider: Provider
) -> None:
    from tests.oidc_app import oidc_overrides

    app, _ = await app_with(**oidc_overrides(provider, oidc_jwks_refresh_seconds=3600))
    async with browser(app) as c:
        good = provider.sign(_claims(provider, login_name("v")))
        assert (await _post(c, good)).status_code == 200
        fetched = provider.jwks_fetches()
        for _ in range(5):
            token = provider.sign(_claims(provider, login_name("v")), key=new_signing_key())
            assert (await _post(c, token)).status_code == 401
    assert provider.jwks_fetches() <= fetched + 1


async def test_the_native_endpoint_refuses_a_cross_site_request(
    oidc_app: FastAPI, provider: Provider, engine: AsyncEngine
) -> None:
    before = await fingerprint(engine)
    async with browser(oidc_app) as c:
        r = await c.post(
            "/v1/oauth/op/token",
            json={"id_token": provider.sign(_claims(provider, login_name("v")))},
            headers={"Origin": "https://evil.example"},
        )
    assert r.status_code == 403 and r.json()["error"] == "csrf_rejected"
    assert await fingerprint(engine) == before


async def test_the_form_post_callback_is_not_refused_as_cross_site(oidc_app: FastAPI) -> None:
    """The provider posts it from its own site: the origin check and media type do not apply,
    its state does (unknown here, so the login page)."""
    async with browser(oidc_app) as c:
        r = await c.post(
            "/v1/oauth/op/callback",
            data={"code": "x", "state": "y"},
            headers={"Origin": "https://appleid.apple.com", "Sec-Fetch-Site": "cross-site"},
        )
    assert r.status_code == 303
    assert r.headers["location"].endswith("/account/login?error=invalid_state")
