"""Synchronous hooks (CONTRACT §16) against a real HTTP endpoint run by the test.

Every request the endpoint receives is verified with ``standardwebhooks`` on its side
(``tests.hook_support``); each test asserts that it verified.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.hooks.client import MAX_ANSWER_BYTES
from app.settings import Settings
from tests.account_support import PASSWORD, bare_client, register
from tests.conftest import BASE_URL, AppFactory, make_settings
from tests.hook_support import HookReceiver, Reply, hook_receiver, hook_settings

BEARER = {"X-Anonid-Token": "bearer"}


async def _users(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.text("SELECT count(*) FROM users")))


async def _exists(engine: AsyncEngine, user_id: str) -> bool:
    async with engine.connect() as conn:
        found = await conn.scalar(
            sa.text("SELECT count(*) FROM users WHERE id = :id"), {"id": user_id}
        )
    return found == 1


async def _data(engine: AsyncEngine, user_id: str) -> Any:
    async with engine.connect() as conn:
        return await conn.scalar(sa.text("SELECT data FROM users WHERE id = :id"), {"id": user_id})


async def verified_claims(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    """The access token's claims, verified against the service's JWKS as an app would."""
    keys = jwt.PyJWKSet.from_dict((await client.get("/.well-known/jwks.json")).json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    return jwt.decode(token, key.key, algorithms=["ES256"], audience="anonid", issuer=BASE_URL)  # type: ignore[no-any-return]


def assert_all_verified(receiver: HookReceiver) -> None:
    assert receiver.received, "the hook was never called"
    assert all(r.verified for r in receiver.received)
    for r in receiver.received:
        assert r.headers["webhook-id"] and r.headers["webhook-timestamp"]
        assert r.headers["webhook-signature"].startswith("v1,")


# before_user_created


async def test_before_user_created_is_asked_with_kind_ip_and_user_agent_and_may_allow(
    app_with: AppFactory,
) -> None:
    async with hook_receiver() as receiver:
        receiver.replies["before_user_created"] = Reply({"allow": True})
        _, c = await app_with(**hook_settings(receiver, "before_user_created"))
        r = await c.post("/v1/anonymous", headers={"User-Agent": "TestBrowser/1.0"})
        assert r.status_code == 201, r.text
        (asked,) = receiver.of("before_user_created")
        assert asked.data == {
            "kind": "anonymous",
            "ip": "127.0.0.1",
            "user_agent": "TestBrowser/1.0",
        }
        assert_all_verified(receiver)
        # A caller that already has a session is not a new account: the hook is not asked.
        assert (await c.post("/v1/anonymous")).status_code == 200
        assert len(receiver.of("before_user_created")) == 1


async def test_a_before_user_created_denial_is_hook_denied_and_leaves_no_row(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    async with hook_receiver() as receiver:
        receiver.replies["before_user_created"] = Reply({"allow": False, "message": "No bots."})
        _, c = await app_with(**hook_settings(receiver, "before_user_created"))
        before = await _users(engine)
        r = await c.post("/v1/anonymous")
        assert r.status_code == 403
        assert r.json() == {"error": "hook_denied", "message": "No bots."}
        assert "set-cookie" not in r.headers
        assert await _users(engine) == before
        assert_all_verified(receiver)


async def test_a_hook_that_hangs_is_cut_at_the_timeout_and_denies_by_default(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    async with hook_receiver() as receiver:
        receiver.replies["before_user_created"] = Reply({"allow": True}, delay=5)
        _, c = await app_with(**hook_settings(receiver, "before_user_created", hook_timeout_ms=300))
        before = await _users(engine)
        started = time.monotonic()
        r = await c.post("/v1/anonymous")
        elapsed = time.monotonic() - started
        assert r.status_code == 403 and r.json()["error"] == "hook_denied"
        assert 0.3 <= elapsed < 2, elapsed
        assert await _users(engine) == before


async def test_with_failure_allow_a_hook_that_hangs_or_errs_is_ignored(
    app_with: AppFactory,
) -> None:
    async with hook_receiver() as receiver:
        settings = hook_settings(
            receiver, "before_user_created", hook_timeout_ms=300, hook_failure="allow"
        )
        _, c = await app_with(**settings)
        receiver.replies["before_user_created"] = Reply({"allow": False}, delay=5)
        started = time.monotonic()
        assert (await c.post("/v1/anonymous")).status_code == 201
        assert time.monotonic() - started < 2
        for broken in (Reply({"allow": False}, status=500), Reply(b"not json"), Reply([1])):
            receiver.replies["before_user_created"] = broken
            c.cookies.clear()
            assert (await c.post("/v1/anonymous")).status_code == 201
        # An answer is obeyed, whatever the failure policy.
        receiver.replies["before_user_created"] = Reply({"allow": False})
        c.cookies.clear()
        assert (await c.post("/v1/anonymous")).status_code == 403


async def test_an_unreachable_or_failing_hook_denies_with_the_deny_policy(
    app_with: AppFactory,
) -> None:
    async with hook_receiver() as receiver:
        _, c = await app_with(**hook_settings(receiver, "before_user_created"))
        for broken in (Reply({"allow": True}, status=502), Reply(b"{"), Reply({"allow": "yes"})):
            receiver.replies["before_user_created"] = broken
            r = await c.post("/v1/anonymous")
            assert r.status_code == 403 and r.json()["error"] == "hook_denied", broken
    # The receiver is gone: nothing listens at the URL any more.
    c.cookies.clear()
    r = await c.post("/v1/anonymous")
    assert r.status_code == 403 and r.json()["error"] == "hook_denied"


async def test_a_redirecting_or_oversized_hook_answer_is_a_failure(app_with: AppFactory) -> None:
    """A signed call goes only where the operator pointed it, and an answer is read only up to
    its limit: both count as failures (here: deny)."""
    async with hook_receiver() as receiver, hook_receiver(receiver.secret) as elsewhere:
        elsewhere.replies["before_user_created"] = Reply({"allow": True})
        _, c = await app_with(**hook_settings(receiver, "before_user_created"))
        moved = Reply({"allow": True}, status=307, headers={"location": elsewhere.url})
        padded = {"allow": True, "padding": "x" * MAX_ANSWER_BYTES}
        for broken in (moved, Reply(padded)):
            receiver.replies["before_user_created"] = broken
            r = await c.post("/v1/anonymous")
            assert r.status_code == 403 and r.json()["error"] == "hook_denied"
        assert elsewhere.of("before_user_created") == []
        assert len(receiver.of("before_user_created")) == 2


# custom_claims


async def test_custom_claims_are_in_the_access_token_under_app_at_creation_login_and_refresh(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    async with hook_receiver() as receiver:
        receiver.replies["custom_claims"] = Reply({"claims": {"plan": "free", "n": 1}})
        application, c = await app_with(**hook_settings(receiver, "custom_claims"))
        r = await c.post("/v1/anonymous", headers=BEARER)
        assert r.status_code == 201, r.text
        body = r.json()
        claims = await verified_claims(c, body["access_token"])
        assert claims["app"] == {"plan": "free", "n": 1}
        assert claims["sub"] == body["user"]["id"] and claims["anon"] is True
        (asked,) = receiver.of("custom_claims")
        assert asked.data["user"]["id"] == body["user"]["id"]
        assert asked.data["user"]["is_anonymous"] is True

        # Every refresh asks again.
        receiver.replies["custom_claims"] = Reply({"claims": {"plan": "pro"}})
        r = await c.post("/v1/session/refresh", json={"refresh_token": body["refresh_token"]})
        assert r.status_code == 200, r.text
        refreshed = await verified_claims(c, r.json()["access_token"])
        assert refreshed["app"] == {"plan": "pro"} and refreshed["sid"] == claims["sid"]
        assert (
            await c.get("/v1/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
        ).status_code == 200

        # A browser's cookie carries it too, and so does a password login.
        async with bare_client(application) as browser:
            account = await register(browser, engine)
            receiver.replies["custom_claims"] = Reply({"claims": {"role": "member"}})
            browser.cookies.clear()
            r = await browser.post(
                "/v1/login", json={"email": account["email"], "password": PASSWORD}
            )
            assert r.status_code == 200, r.text
            cookie = browser.cookies["anonid_session"]
            assert (await verified_claims(browser, cookie))["app"] == {"role": "member"}
            asked = receiver.of("custom_claims")[-1]
            assert asked.data["user"]["email"] == account["email"]
        assert_all_verified(receiver)


async def test_custom_claims_cannot_override_sub_or_any_claim_of_the_session(
    app_with: AppFactory,
) -> None:
    async with hook_receiver() as receiver:
        _, deny = await app_with(**hook_settings(receiver, "custom_claims"))
        _, allow = await app_with(**hook_settings(receiver, "custom_claims", hook_failure="allow"))
        for reserved in ("sub", "sid", "exp", "anon", "sv", "iss", "aud", "iat", "jti"):
            receiver.replies["custom_claims"] = Reply({"claims": {reserved: "x", "plan": "pro"}})
            deny.cookies.clear()
            r = await deny.post("/v1/anonymous", headers=BEARER)
            assert r.status_code == 503, (reserved, r.text)
            assert r.json()["error"] == "hook_unavailable"
            allow.cookies.clear()
            r = await allow.post("/v1/anonymous", headers=BEARER)
            assert r.status_code == 201
            claims = await verified_claims(allow, r.json()["access_token"])
            assert "app" not in claims
            assert claims["sub"] == r.json()["user"]["id"]


async def test_a_failing_custom_claims_hook_on_refresh_leaves_the_refresh_token_usable(
    app_with: AppFactory,
) -> None:
    async with hook_receiver() as receiver:
        receiver.replies["custom_claims"] = Reply({"claims": {"v": 1}})
        _, c = await app_with(
            **hook_settings(receiver, "custom_claims", hook_timeout_ms=300, refresh_reuse_seconds=0)
        )
        body = (await c.post("/v1/anonymous", headers=BEARER)).json()
        receiver.replies["custom_claims"] = Reply({"claims": {"v": 2}}, delay=3)
        started = time.monotonic()
        r = await c.post("/v1/session/refresh", json={"refresh_token": body["refresh_token"]})
        assert r.status_code == 503 and r.json()["error"] == "hook_unavailable"
        assert time.monotonic() - started < 2
        # The token was not rotated: once the hook answers, the same token still works.
        receiver.replies["custom_claims"] = Reply({"claims": {"v": 3}})
        r = await c.post("/v1/session/refresh", json={"refresh_token": body["refresh_token"]})
        assert r.status_code == 200, r.text
        assert (await verified_claims(c, r.json()["access_token"]))["app"] == {"v": 3}


async def test_without_hooks_the_access_token_has_no_app_claim(client: httpx.AsyncClient) -> None:
    client.cookies.clear()
    r = await client.post("/v1/anonymous", headers=BEARER)
    assert "app" not in await verified_claims(client, r.json()["access_token"])


# before_merge


async def _guest_with(application: FastAPI, data: dict[str, Any]) -> tuple[httpx.AsyncClient, str]:
    device = bare_client(application)
    r = await device.post("/v1/anonymous")
    assert r.status_code == 201
    assert (await device.put("/v1/me/data", json=data)).status_code == 200
    return device, r.json()["user"]["id"]


async def _login(device: httpx.AsyncClient, email: str) -> httpx.Response:
    try:
        return await device.post("/v1/login", json={"email": email, "password": PASSWORD})
    finally:
        await device.aclose()


async def test_a_before_merge_veto_leaves_both_accounts_as_they_were_and_signs_in(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    async with hook_receiver() as receiver:
        receiver.replies["before_merge"] = Reply({"allow": False})
        application, c = await app_with(**hook_settings(receiver, "before_merge"))
        account = await register(c, engine, data={"cart": [1]})
        device, guest_id = await _guest_with(application, {"cart": [2], "only_guest": True})
        r = await _login(device, account["email"])
        assert r.status_code == 200, r.text
        assert r.json()["user"]["id"] == account["id"]
        assert "merged_from" not in r.json()
        assert r.json()["user"]["data"] == {"cart": [1]}
        assert await _exists(engine, guest_id)
        assert await _data(engine, guest_id) == {"cart": [2], "only_guest": True}
        assert await _data(engine, account["id"]) == {"cart": [1]}
        (asked,) = receiver.of("before_merge")
        assert asked.data["guest"]["id"] == guest_id
        assert asked.data["guest"]["data"] == {"cart": [2], "only_guest": True}
        assert asked.data["account"]["id"] == account["id"]
        assert asked.data["account"]["data"] == {"cart": [1]}
        assert_all_verified(receiver)


async def test_before_merge_may_replace_the_merged_data(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    async with hook_receiver() as receiver:
        replaced = {"cart": [2, 1], "merged_by": "app"}
        receiver.replies["before_merge"] = Reply({"allow": True, "data": replaced})
        application, c = await app_with(**hook_settings(receiver, "before_merge"))
        account = await register(c, engine, data={"cart": [1]})
        device, guest_id = await _guest_with(application, {"cart": [2]})
        r = await _login(device, account["email"])
        assert r.status_code == 200, r.text
        assert r.json()["merged_from"] == guest_id
        assert r.json()["user"]["data"] == replaced
        assert await _data(engine, account["id"]) == replaced
        assert not await _exists(engine, guest_id)


async def test_before_merge_allowing_without_data_merges_as_usual(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    async with hook_receiver() as receiver:
        receiver.replies["before_merge"] = Reply({"allow": True})
        application, c = await app_with(**hook_settings(receiver, "before_merge"))
        account = await register(c, engine, data={"cart": [1]})
        device, guest_id = await _guest_with(application, {"cart": [2]})
        r = await _login(device, account["email"])
        assert r.json()["merged_from"] == guest_id
        assert r.json()["user"]["data"] == {"cart": [1, 2]}


async def test_before_merge_data_over_the_size_limit_is_a_refusal(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    async with hook_receiver() as receiver:
        receiver.replies["before_merge"] = Reply({"allow": True, "data": {"big": "x" * 600}})
        application, c = await app_with(
            **hook_settings(receiver, "before_merge", hook_failure="allow"), data_max_bytes=512
        )
        account = await register(c, engine, data={"cart": [1]})
        device, guest_id = await _guest_with(application, {"cart": [2]})
        r = await _login(device, account["email"])
        assert r.status_code == 200 and "merged_from" not in r.json()
        assert await _exists(engine, guest_id)
        assert await _data(engine, account["id"]) == {"cart": [1]}


async def test_before_merge_failure_follows_the_policy_and_the_sign_in_succeeds(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    async with hook_receiver() as receiver:
        receiver.replies["before_merge"] = Reply({"allow": True}, delay=5)
        for policy, merged in (("deny", False), ("allow", True)):
            application, c = await app_with(
                **hook_settings(receiver, "before_merge", hook_timeout_ms=300, hook_failure=policy)
            )
            account = await register(c, engine, data={"cart": [1]})
            device, guest_id = await _guest_with(application, {"cart": [2]})
            started = time.monotonic()
            r = await _login(device, account["email"])
            assert time.monotonic() - started < 2.5
            assert r.status_code == 200, r.text
            assert ("merged_from" in r.json()) is merged, policy
            assert await _exists(engine, guest_id) is not merged


# Connections


async def test_no_database_connection_is_held_while_a_hook_is_waited_on(
    app_with: AppFactory,
) -> None:
    async with hook_receiver() as receiver:
        settings = hook_settings(
            receiver, "before_user_created,custom_claims", hook_timeout_ms=5000
        )
        _, c = await app_with(**settings, database_pool_size=1)
        receiver.replies["before_user_created"] = Reply({"allow": True})
        receiver.replies["custom_claims"] = Reply({"claims": {}})
        session = (await c.post("/v1/anonymous", headers=BEARER)).json()
        me = {"Authorization": f"Bearer {session['access_token']}"}
        c.cookies.clear()

        receiver.replies["before_user_created"] = Reply({"allow": True}, delay=1.5)
        receiver.replies["custom_claims"] = Reply({"claims": {}}, delay=1.5)
        for slow in (
            c.post("/v1/anonymous", headers=BEARER),
            c.post("/v1/session/refresh", json={"refresh_token": session["refresh_token"]}),
        ):
            waiting = asyncio.ensure_future(slow)
            await asyncio.sleep(0.3)
            started = time.monotonic()
            for _ in range(5):
                r = await c.get("/v1/me", headers=me)
                assert r.status_code == 200, r.text
            # Five requests on the one connection while the hook still sleeps.
            assert time.monotonic() - started < 1.0
            assert not waiting.done()
            assert (await waiting).status_code in (200, 201)


def test_hook_settings_are_refused_when_incomplete(database_url: str) -> None:
    import pytest

    from app.settings import SettingsError, load_settings

    secret = "whsec_" + "A" * 32
    for bad in (
        {"hooks": "custom_claims"},
        {"hook_url": "http://127.0.0.1:1/h", "hook_secret": secret},
        {"hook_url": "http://127.0.0.1:1/h", "hooks": "custom_claims"},
        {"hook_url": "http://127.0.0.1:1/h", "hooks": "custom_claims", "hook_secret": "nope"},
        {"hook_url": "http://127.0.0.1:1/h", "hooks": "on_login", "hook_secret": secret},
        {"hook_url": "ftp://x/h", "hooks": "custom_claims", "hook_secret": secret},
    ):
        with pytest.raises(SettingsError):
            load_settings(_env_file=None, database_url=database_url, **bad)
    good: Settings = make_settings(
        database_url, hook_url="http://127.0.0.1:1/h", hooks="custom_claims", hook_secret=secret
    )
    assert good.hook_set == frozenset({"custom_claims"})
    assert make_settings(database_url).hook_set == frozenset()
