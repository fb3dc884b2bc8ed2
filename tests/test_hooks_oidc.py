"""``before_user_created`` for accounts registered without a guest (CONTRACT §16): a first
sign-in with a provider, against the real provider of ``tests.oidc_support`` and a real hook
endpoint."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import AppFactory
from tests.hook_support import Reply, hook_receiver, hook_settings
from tests.oidc_app import browser, new_guest, oidc_overrides, provider
from tests.oidc_support import Provider, login_name

__all__ = ["provider"]


def _token(provider: Provider, subject: str) -> dict[str, Any]:
    claims = provider.id_token_claims(subject, email=f"{subject}@example.com", email_verified=True)
    return {"id_token": provider.sign(claims)}


async def _accounts_with(engine: AsyncEngine, subject: str) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                sa.text(
                    "SELECT count(*) FROM users WHERE email = :e OR id IN "
                    "(SELECT user_id FROM identities WHERE subject = :s)"
                ),
                {"e": f"{subject}@example.com", "s": subject},
            )
        )


async def test_a_first_provider_sign_in_asks_before_user_created_as_registered(
    app_with: AppFactory, provider: Provider, engine: AsyncEngine
) -> None:
    async with hook_receiver() as receiver:
        receiver.replies["before_user_created"] = Reply({"allow": False, "message": "Closed."})
        application, _ = await app_with(
            **oidc_overrides(provider), **hook_settings(receiver, "before_user_created")
        )
        refused = login_name("h")
        async with browser(application) as c:
            r = await c.post(
                "/v1/oauth/op/token",
                json=_token(provider, refused),
                headers={"User-Agent": "App/2"},
            )
        assert r.status_code == 403, r.text
        assert r.json() == {"error": "hook_denied", "message": "Closed."}
        assert await _accounts_with(engine, refused) == 0
        (asked,) = receiver.of("before_user_created")
        assert asked.data["kind"] == "registered" and asked.data["user_agent"] == "App/2"
        assert asked.verified

        receiver.replies["before_user_created"] = Reply({"allow": True})
        allowed = login_name("h")
        async with browser(application) as c:
            r = await c.post("/v1/oauth/op/token", json=_token(provider, allowed))
            assert r.status_code == 200, r.text
            assert r.json()["user"]["state"] == "registered"
            # Signing in again is not a new account: the hook is not asked.
            asked_before = len(receiver.of("before_user_created"))
            c.cookies.clear()
            again = await c.post("/v1/oauth/op/token", json=_token(provider, allowed))
            assert again.status_code == 200
        assert len(receiver.of("before_user_created")) == asked_before
        assert await _accounts_with(engine, allowed) == 1


async def test_a_guest_registering_with_a_provider_is_not_a_new_account(
    app_with: AppFactory, provider: Provider
) -> None:
    async with hook_receiver() as receiver:
        receiver.replies["before_user_created"] = Reply({"allow": True})
        application, _ = await app_with(
            **oidc_overrides(provider), **hook_settings(receiver, "before_user_created")
        )
        async with browser(application) as c:
            await new_guest(c)  # made before the hook refuses everything
            assert len(receiver.of("before_user_created")) == 1
            receiver.replies["before_user_created"] = Reply({"allow": False})
            r = await c.post("/v1/oauth/op/token", json=_token(provider, login_name("h")))
        assert r.status_code == 200, r.text
        assert r.json()["user"]["state"] == "registered"
        assert len(receiver.of("before_user_created")) == 1
