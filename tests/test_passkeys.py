"""Passkeys over HTTP (CONTRACT §5, §6, §14): a guest converts with one, a registered account adds
more, signing in merges a guest, challenges are single use and bound to who asked, the signature
counter refuses a clone, and an account keeps a way to sign in. The authenticator is the Python
one of ``tests.software_authenticator``; ``tests/test_passkeys_browser.py`` does it in Chromium."""

from __future__ import annotations

import asyncio
import base64
import uuid

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.account_support import bare_client, new_guest, register
from tests.conftest import AppFactory
from tests.oidc_app import events_of, user_row
from tests.passkey_support import (
    CHALLENGE_ID,
    add_passkey,
    authenticator,
    creation_options,
    passkey_account,
    request_options,
    sign_in,
    stored_count,
)
from tests.software_authenticator import b64url, unb64url


async def test_a_guest_adding_a_passkey_becomes_registered_in_place_with_its_data(
    app: FastAPI, engine: AsyncEngine
) -> None:
    device = authenticator()
    async with bare_client(app) as c:
        guest = await new_guest(c)
        assert (await c.put("/v1/me/data", json={"cart": ["tea"]})).status_code == 200
        old_cookie = c.cookies["anonid_session"]
        options = await creation_options(c)
        r = await add_passkey(c, device, name="My laptop")
        assert r.status_code == 201, r.text
        user = r.json()["user"]
        assert r.headers["cache-control"] == "no-store"
        assert user["id"] == guest["id"] and user["state"] == "registered"
        assert user["is_anonymous"] is False and user["email"] is None
        assert user["username"] is None and user["data"] == {"cart": ["tea"]}
        assert (await c.get("/v1/me")).json()["id"] == guest["id"]
        # The guest's session ended with the conversion (the session version moved on).
        async with bare_client(app) as old:
            old.cookies.set("anonid_session", old_cookie)
            assert (await old.get("/v1/me")).status_code == 401

    # Creation options: a resident key, user verification preferred, the id as user handle.
    assert options["authenticatorSelection"] == {
        "residentKey": "required",
        "requireResidentKey": True,
        "userVerification": "preferred",
    }
    assert options["attestation"] == "none"
    assert options["rp"] == {"id": "anonid.test", "name": "anonid"}
    assert base64.urlsafe_b64decode(options["user"]["id"] + "==") == uuid.UUID(guest["id"]).bytes
    assert options["excludeCredentials"] == []
    row = await user_row(engine, guest["id"])
    assert row.is_anonymous is False and row.converted_at is not None
    events = await events_of(engine, guest["id"])
    assert ("user.converted", {"id": guest["id"], "method": "passkey"}) in events
    assert [t for t, _ in events].count("user.passkey_added") == 1


async def test_a_registered_account_adds_more_passkeys_with_its_session_renewed(
    app: FastAPI, engine: AsyncEngine
) -> None:
    device = authenticator()
    async with bare_client(app) as c:
        account = await register(c, engine)
        first = await add_passkey(c, device)
        assert first.status_code == 201, first.text
        assert first.json()["user"]["email"] == account["email"]
        options = await creation_options(c)
        # The account's passkeys are excluded: one authenticator is not registered twice.
        assert [d["id"] for d in options["excludeCredentials"]] == [
            b64url(device.credentials[0].credential_id)
        ]
        r = await c.post(
            "/v1/me/passkeys", json={"credential": device.create(options), "name": " Phone  "}
        )
        assert r.status_code == 201, r.text
        assert (await c.get("/v1/me")).status_code == 200
        listed = (await c.get("/v1/me/passkeys")).json()["passkeys"]
    assert [p["name"] for p in listed] == ["Passkey", "Phone"]
    assert all(p["last_used_at"] is None for p in listed)
    events = [t for t, _ in await events_of(engine, account["id"])]
    assert events.count("user.passkey_added") == 2
    assert events.count("user.converted") == 1  # the password setup, not the passkeys


async def test_a_credential_already_registered_is_refused_and_the_guest_stays_a_guest(
    app: FastAPI, engine: AsyncEngine
) -> None:
    device = authenticator()
    async with bare_client(app) as a, bare_client(app) as b:
        await passkey_account(a, device)
        guest = await new_guest(b)
        taken = device.credentials[0].credential_id
        again = device.create(await creation_options(b), credential_id=taken)
        r = await b.post("/v1/me/passkeys", json={"credential": again})
        assert r.status_code == 400 and r.json()["error"] == "invalid_passkey"
        assert (await b.get("/v1/me")).json()["state"] == "anonymous"
    assert (await user_row(engine, guest["id"])).is_anonymous is True


async def test_signing_in_with_a_passkey_merges_the_guest_session(
    app: FastAPI, engine: AsyncEngine
) -> None:
    device = authenticator()
    async with bare_client(app) as owner, bare_client(app) as other:
        account = await passkey_account(owner, device, data={"favourites": {"teapot": True}})
        guest = await new_guest(other)
        await other.put("/v1/me/data", json={"favourites": {"socks": True}})
        r = await sign_in(other, device)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["merged_from"] == guest["id"]
        assert body["user"]["id"] == account["id"]
        assert body["user"]["data"] == {"favourites": {"teapot": True, "socks": True}}
        assert r.headers["cache-control"] == "no-store" and "access_token" not in body
        assert (await other.get("/v1/me")).json()["id"] == account["id"]
        # Without a guest session there is nothing to merge.
        again = await sign_in(owner, device)
        assert again.status_code == 200 and "merged_from" not in again.json()
    assert await user_row(engine, guest["id"]) is None
    assert ("user.merged", {"from": guest["id"], "into": account["id"]}) in await events_of(
        engine, account["id"]
    )
    async with engine.connect() as conn:
        used = await conn.scalar(
            sa.text("SELECT last_used_at FROM passkeys WHERE user_id = :u"), {"u": account["id"]}
        )
    assert used is not None


async def test_a_client_without_cookies_sends_the_challenge_id_back(app: FastAPI) -> None:
    device = authenticator()
    async with bare_client(app) as c:
        account = await passkey_account(c, device)
    async with bare_client(app) as native:
        options, challenge_id = await request_options(native)
        native.cookies.clear()  # an app: no cookie jar, only the header
        credential = device.get(options)
        headers = {CHALLENGE_ID: challenge_id, "X-Anonid-Token": "bearer"}
        r = await native.post("/v1/login/passkey", json={"credential": credential}, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["user"]["id"] == account["id"] and r.json()["access_token"]
        assert "set-cookie" not in r.headers
        # Neither the cookie nor the header: the challenge is nobody's.
        options, _ = await request_options(native)
        native.cookies.clear()
        r = await native.post("/v1/login/passkey", json={"credential": device.get(options)})
        assert r.status_code == 401 and r.json()["error"] == "invalid_credentials"


async def test_a_sign_in_challenge_asked_by_another_browser_is_refused_and_left_to_it(
    app: FastAPI,
) -> None:
    device = authenticator()
    async with bare_client(app) as c:
        await passkey_account(c, device)
    async with bare_client(app) as asker, bare_client(app) as attacker:
        options, _ = await request_options(asker)
        await request_options(attacker)  # a challenge cookie of its own
        credential = device.get(options)
        stolen = await attacker.post("/v1/login/passkey", json={"credential": credential})
        assert stolen.status_code == 401
        mine = await asker.post("/v1/login/passkey", json={"credential": credential})
        assert mine.status_code == 200, mine.text


async def test_a_registration_challenge_serves_only_the_session_that_asked(
    app: FastAPI, engine: AsyncEngine
) -> None:
    device = authenticator()
    async with bare_client(app) as asker, bare_client(app) as other:
        await new_guest(asker)
        guest = await new_guest(other)
        credential = device.create(await creation_options(asker))
        r = await other.post("/v1/me/passkeys", json={"credential": credential})
        assert r.status_code == 400 and r.json()["error"] == "invalid_passkey"
        assert (await user_row(engine, guest["id"])).is_anonymous is True
        assert (
            await asker.post("/v1/me/passkeys", json={"credential": credential})
        ).status_code == 201


async def test_a_challenge_is_used_once_even_by_concurrent_requests(app: FastAPI) -> None:
    device = authenticator()
    async with bare_client(app) as c:
        await passkey_account(c, device)
        options, _ = await request_options(c)
        credential = device.get(options)
        answers = await asyncio.gather(
            *(c.post("/v1/login/passkey", json={"credential": credential}) for _ in range(8))
        )
        assert sorted(r.status_code for r in answers) == [200] + [401] * 7
        again = await c.post("/v1/login/passkey", json={"credential": credential})
        assert again.status_code == 401


async def test_one_attestation_posted_eight_times_at_once_adds_one_passkey(
    app: FastAPI, engine: AsyncEngine
) -> None:
    device = authenticator()
    async with bare_client(app) as c:
        guest = await new_guest(c)
        credential = device.create(await creation_options(c))
        answers = await asyncio.gather(
            *(c.post("/v1/me/passkeys", json={"credential": credential}) for _ in range(8))
        )
    assert sorted(r.status_code for r in answers) == [201] + [400] * 7
    assert await stored_count(engine, guest["id"]) == [0]
    converted = [t for t, _ in await events_of(engine, guest["id"]) if t == "user.converted"]
    assert converted == ["user.converted"]


async def test_an_expired_challenge_is_refused(app: FastAPI, engine: AsyncEngine) -> None:
    device = authenticator()
    async with bare_client(app) as c:
        await passkey_account(c, device)
        options, _ = await request_options(c)
        created = await creation_options(c)
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "UPDATE webauthn_challenges SET expires_at = now() - interval '1 second'"
                    " WHERE challenge = ANY(:c)"
                ),
                {"c": [unb64url(options["challenge"]), unb64url(created["challenge"])]},
            )
        r = await c.post("/v1/login/passkey", json={"credential": device.get(options)})
        assert r.status_code == 401
        r = await c.post("/v1/me/passkeys", json={"credential": device.create(created)})
        assert r.status_code == 400 and r.json()["error"] == "invalid_passkey"


async def test_challenges_last_five_minutes(app: FastAPI, engine: AsyncEngine) -> None:
    async with bare_client(app) as c:
        options, _ = await request_options(c)
    async with engine.connect() as conn:
        lifetime = await conn.scalar(
            sa.text("SELECT expires_at - created_at FROM webauthn_challenges WHERE challenge = :c"),
            {"c": unb64url(options["challenge"])},
        )
    assert lifetime.total_seconds() == 300
    assert options["timeout"] == 300_000 and options["userVerification"] == "preferred"
    assert options["rpId"] == "anonid.test" and options["allowCredentials"] == []


async def test_the_signature_counter_is_stored_and_a_clone_with_an_older_count_is_refused(
    app: FastAPI, engine: AsyncEngine
) -> None:
    device = authenticator()
    async with bare_client(app) as c:
        account = await passkey_account(c, device)
        assert (await sign_in(c, device, sign_count=5)).status_code == 200
        assert await stored_count(engine, account["id"]) == [5]
        # A clone of the authenticator, still at an earlier count, or at the same count.
        for stale in (3, 5):
            r = await sign_in(c, device, sign_count=stale)
            assert r.status_code == 401 and r.json()["error"] == "invalid_credentials"
        assert await stored_count(engine, account["id"]) == [5]
        assert (await sign_in(c, device, sign_count=6)).status_code == 200
    assert await stored_count(engine, account["id"]) == [6]


async def test_an_authenticator_without_a_counter_signs_in_every_time(
    app: FastAPI, engine: AsyncEngine
) -> None:
    device = authenticator(counts=False)  # synced passkeys often send 0
    async with bare_client(app) as c:
        account = await passkey_account(c, device)
        for _ in range(3):
            assert (await sign_in(c, device)).status_code == 200
    assert await stored_count(engine, account["id"]) == [0]


@pytest.mark.parametrize(
    "forged",
    [
        {"origin": "https://evil.test"},
        {"origin": "http://anonid.test"},
        {"rp_id": "evil.test"},
        {"user_handle": uuid.uuid4().bytes},
        {"flags": 0x04},  # user verified but not present
    ],
    ids=["another-origin", "another-scheme", "another-rp-id", "another-user", "no-presence"],
)
async def test_an_assertion_for_another_origin_rp_or_user_is_refused(
    app: FastAPI, forged: dict[str, object]
) -> None:
    device = authenticator()
    async with bare_client(app) as c:
        await passkey_account(c, device)
        r = await sign_in(c, device, **forged)
        assert r.status_code == 401 and r.json()["error"] == "invalid_credentials"
        assert (await sign_in(c, device)).status_code == 200  # the passkey itself is fine


@pytest.mark.parametrize(
    "forged", [{"origin": "https://evil.test"}, {"rp_id": "evil.test"}], ids=["origin", "rp-id"]
)
async def test_a_passkey_made_for_another_origin_or_rp_is_not_added(
    app: FastAPI, forged: dict[str, str]
) -> None:
    device = authenticator()
    async with bare_client(app) as c:
        await new_guest(c)
        credential = device.create(await creation_options(c), **forged)
        r = await c.post("/v1/me/passkeys", json={"credential": credential})
        assert r.status_code == 400 and r.json()["error"] == "invalid_passkey"
        assert (await c.get("/v1/me")).json()["state"] == "anonymous"


@pytest.mark.parametrize(
    "credential",
    [
        None,
        "x",
        7,
        [],
        {},
        {"id": "AA", "rawId": "AA", "type": "public-key", "response": {}},
        {
            "id": "AA",
            "rawId": "AA",
            "type": "public-key",
            "response": {
                "clientDataJSON": "e30",
                "attestationObject": "oA",
                "authenticatorData": "AA",
                "signature": "AA",
            },
        },
    ],
)
async def test_whatever_is_not_a_credential_is_refused_without_a_server_error(
    app: FastAPI, credential: object
) -> None:
    async with bare_client(app) as c:
        await new_guest(c)
        body = {} if credential is None else {"credential": credential}
        r = await c.post("/v1/me/passkeys", json=body)
        assert r.status_code == 400 and r.json()["error"] == "invalid_passkey"
        r = await c.post("/v1/login/passkey", json=body)
        assert r.status_code == 401 and r.json()["error"] == "invalid_credentials"


async def test_list_rename_and_remove_keep_a_way_to_sign_in(app: FastAPI) -> None:
    device = authenticator()
    async with bare_client(app) as c, bare_client(app) as stranger:
        await passkey_account(c, device)
        assert (await add_passkey(c, device, name="Phone")).status_code == 201
        first, second = (await c.get("/v1/me/passkeys")).json()["passkeys"]
        r = await c.patch(f"/v1/me/passkeys/{first['id']}", json={"name": "Laptop"})
        assert r.status_code == 200 and r.json() == {**first, "name": "Laptop"}
        for bad in ("", "   ", "x" * 101, "tab\tname\x07"):
            r = await c.patch(f"/v1/me/passkeys/{first['id']}", json={"name": bad})
            assert r.status_code == 422, bad
        assert (await c.delete(f"/v1/me/passkeys/{first['id']}")).status_code == 204
        # The last one of an account without address or identity stays.
        r = await c.delete(f"/v1/me/passkeys/{second['id']}")
        assert r.status_code == 409 and r.json()["error"] == "last_credential"
        assert [p["id"] for p in (await c.get("/v1/me/passkeys")).json()["passkeys"]] == [
            second["id"]
        ]
        # Another account's passkey, a bad id, a guest: nothing there.
        await new_guest(stranger)
        assert (await stranger.get("/v1/me/passkeys")).json() == {"passkeys": []}
        for target in (second["id"], str(uuid.uuid4()), "not-an-id"):
            assert (await stranger.delete(f"/v1/me/passkeys/{target}")).status_code == 404
            r = await stranger.patch(f"/v1/me/passkeys/{target}", json={"name": "Mine"})
            assert r.status_code == 404
        stranger.cookies.clear()
        assert (await stranger.get("/v1/me/passkeys")).status_code == 401


async def test_an_account_with_an_address_may_remove_its_only_passkey(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        await register(c, engine)
        assert (await add_passkey(c, authenticator())).status_code == 201
        [only] = (await c.get("/v1/me/passkeys")).json()["passkeys"]
        assert (await c.delete(f"/v1/me/passkeys/{only['id']}")).status_code == 204


async def test_two_concurrent_removals_leave_one_passkey(app: FastAPI) -> None:
    device = authenticator()
    async with bare_client(app) as c:
        await passkey_account(c, device)
        assert (await add_passkey(c, device)).status_code == 201
        ids = [p["id"] for p in (await c.get("/v1/me/passkeys")).json()["passkeys"]]
        answers = await asyncio.gather(*(c.delete(f"/v1/me/passkeys/{i}") for i in ids))
        assert sorted(r.status_code for r in answers) == [204, 409]
        assert len((await c.get("/v1/me/passkeys")).json()["passkeys"]) == 1


async def _link_identity(engine: AsyncEngine, user_id: str) -> str:
    identity = str(uuid.uuid4())
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO identities (id, user_id, provider, subject) VALUES (:i, :u, 'op', :s)"
            ),
            {"i": identity, "u": user_id, "s": identity},
        )
    return identity


async def test_a_passkey_and_an_identity_each_count_as_the_way_that_remains(
    app: FastAPI, engine: AsyncEngine
) -> None:
    device = authenticator()
    async with bare_client(app) as c:
        account = await passkey_account(c, device)
        identity = await _link_identity(engine, account["id"])
        # The identity may go: the passkey remains.
        assert (await c.delete(f"/v1/me/identities/{identity}")).status_code == 204
        [passkey] = (await c.get("/v1/me/passkeys")).json()["passkeys"]
        # With an identity again, the passkey may go; then the identity is the last way.
        identity = await _link_identity(engine, account["id"])
        assert (await c.delete(f"/v1/me/passkeys/{passkey['id']}")).status_code == 204
        r = await c.delete(f"/v1/me/identities/{identity}")
        assert r.status_code == 409 and r.json()["error"] == "last_credential"


async def test_the_database_refuses_to_leave_a_passkey_only_account_without_its_passkey(
    engine: AsyncEngine,
) -> None:
    account = uuid.uuid4()
    insert_passkey = sa.text(
        "INSERT INTO passkeys (id, user_id, credential_id, public_key, name)"
        " VALUES (:id, :u, :c, :c, 'k')"
    )
    async with engine.connect() as conn:
        async with conn.begin():  # a registered account whose one way in is a passkey
            await conn.execute(
                sa.text("INSERT INTO users (id, is_anonymous, data) VALUES (:id, false, '{}')"),
                {"id": account},
            )
            await conn.execute(
                insert_passkey, {"id": uuid.uuid4(), "u": account, "c": account.bytes}
            )
        with pytest.raises(
            sa.exc.IntegrityError, match="needs an address, an identity or a passkey"
        ):
            async with conn.begin():
                await conn.execute(
                    sa.text("DELETE FROM passkeys WHERE user_id = :u"), {"u": account}
                )
        async with conn.begin():  # the account goes with its passkeys
            await conn.execute(sa.text("DELETE FROM users WHERE id = :u"), {"u": account})
            assert (
                await conn.scalar(
                    sa.text("SELECT count(*) FROM passkeys WHERE user_id = :u"), {"u": account}
                )
            ) == 0


async def test_passkeys_are_in_the_export_and_go_with_the_account(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as c:
        account = await passkey_account(c, authenticator())
        export = (await c.get("/v1/me/export")).json()
        [listed] = export["passkeys"]
        assert listed["name"] == "Passkey" and listed["sign_count"] == 0
        assert set(listed) == {
            "id",
            "name",
            "aaguid",
            "backed_up",
            "sign_count",
            "created_at",
            "last_used_at",
        }
        assert (await c.delete("/v1/me")).status_code == 204
    assert await stored_count(engine, account["id"]) == []


async def test_passkey_sign_in_is_rate_limited_like_every_login(app_with: AppFactory) -> None:
    _, c = await app_with(login_rate_limit="2/minute")
    device = authenticator()
    await passkey_account(c, device)  # adding the passkey counts once
    assert (await sign_in(c, device)).status_code == 200
    r = await sign_in(c, device)
    assert r.status_code == 429 and r.json()["error"] == "rate_limited"


async def test_sign_in_challenges_are_limited_per_client_like_new_guests(
    app_with: AppFactory,
) -> None:
    _, c = await app_with(anonymous_rate_limit="2/minute")
    for _ in range(2):
        assert (await c.post("/v1/login/passkey/options")).status_code == 200
    r = await c.post("/v1/login/passkey/options")
    assert r.status_code == 429 and r.json()["error"] == "rate_limited"
    assert int(r.headers["retry-after"]) >= 1


async def test_adding_a_passkey_renews_this_session_and_leaves_the_accounts_others(
    app: FastAPI, engine: AsyncEngine
) -> None:
    device = authenticator()
    async with bare_client(app) as laptop, bare_client(app) as phone:
        account = await register(laptop, engine)
        r = await phone.post(
            "/v1/login", json={"email": account["email"], "password": account["password"]}
        )
        assert r.status_code == 200
        # A registration challenge serves the session that asked, not another of the account.
        credential = device.create(await creation_options(laptop))
        r = await phone.post("/v1/me/passkeys", json={"credential": credential})
        assert r.status_code == 400 and r.json()["error"] == "invalid_passkey"
        assert (
            await laptop.post("/v1/me/passkeys", json={"credential": credential})
        ).status_code == 201
        sessions = (await laptop.get("/v1/me/sessions")).json()["sessions"]
        assert len(sessions) == 2 and sum(s["current"] for s in sessions) == 1
        assert (await phone.get("/v1/me")).status_code == 200


async def test_an_app_on_an_allowed_origin_may_send_and_read_the_challenge_id(
    app_with: AppFactory,
) -> None:
    _, c = await app_with(allowed_origins="https://shop.example")
    pre = await c.options(
        "/v1/login/passkey",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-anonid-challenge-id",
        },
    )
    assert pre.status_code == 200
    assert "x-anonid-challenge-id" in pre.headers["access-control-allow-headers"].lower()
    r = await c.post("/v1/login/passkey/options", headers={"Origin": "https://shop.example"})
    assert "x-anonid-challenge-id" in r.headers["access-control-expose-headers"]
    assert r.headers[CHALLENGE_ID]
