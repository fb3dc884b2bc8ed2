"""``GET /v1/me/identities`` and ``DELETE /v1/me/identities/{id}`` (CONTRACT §5, §6): an account
keeps at least one way to sign in, and the database holds to it too (migration 0011)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.credentials.identities import Outcome, Starter, decide
from tests.account_support import register
from tests.oidc_app import (
    SHOP,
    browser,
    identities_of,
    new_guest,
    oidc_app,
    provider,
    sign_in_with,
)
from tests.oidc_support import login_name

__all__ = ["oidc_app", "provider"]


async def _listed(c) -> list[dict]:  # type: ignore[no-untyped-def]
    r = await c.get("/v1/me/identities")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return r.json()["identities"]  # type: ignore[no-any-return]


async def test_an_account_with_an_address_may_remove_its_only_identity(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    async with browser(oidc_app) as c:
        await new_guest(c)
        await sign_in_with(c, login_name("v"))
        [identity] = await _listed(c)
        assert (await c.delete(f"/v1/me/identities/{identity['id']}")).status_code == 204
        assert await _listed(c) == []
        me = (await c.get("/v1/me")).json()
    assert me["state"] == "registered" and me["email"]


async def test_the_last_way_to_sign_in_cannot_be_removed(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    async with browser(oidc_app) as c:
        await new_guest(c)
        await sign_in_with(c, login_name("n"), provider="op")  # no address
        await sign_in_with(c, login_name("n"), provider="trusted", return_to=f"{SHOP}/")
        first, second = await _listed(c)
        assert (await c.delete(f"/v1/me/identities/{first['id']}")).status_code == 204
        r = await c.delete(f"/v1/me/identities/{second['id']}")
        assert r.status_code == 409 and r.json()["error"] == "last_credential"
        assert [i["id"] for i in await _listed(c)] == [second["id"]]


async def test_two_concurrent_removals_leave_one_identity(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    async with browser(oidc_app) as c:
        await new_guest(c)
        await sign_in_with(c, login_name("n"), provider="op")
        await sign_in_with(c, login_name("n"), provider="trusted")
        ids = [i["id"] for i in await _listed(c)]
        answers = await asyncio.gather(*(c.delete(f"/v1/me/identities/{i}") for i in ids))
        assert sorted(r.status_code for r in answers) == [204, 409]
        assert len(await _listed(c)) == 1


async def test_another_accounts_identity_or_a_bad_id_is_not_found(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    async with browser(oidc_app) as owner:
        await sign_in_with(owner, login_name("v"))
        [theirs] = await _listed(owner)
    async with browser(oidc_app) as c:
        await register(c, engine)
        for target in (theirs["id"], str(uuid.uuid4()), "not-a-uuid"):
            r = await c.delete(f"/v1/me/identities/{target}")
            assert r.status_code == 404 and r.json()["error"] == "not_found"
    async with engine.connect() as conn:
        assert await conn.scalar(
            sa.text("SELECT count(*) FROM identities WHERE id = :id"), {"id": theirs["id"]}
        )


async def test_identities_need_a_session_and_a_guest_has_none(oidc_app: FastAPI) -> None:
    async with browser(oidc_app) as c:
        assert (await c.get("/v1/me/identities")).status_code == 401
        await new_guest(c)
        assert await _listed(c) == []
        assert (await c.delete(f"/v1/me/identities/{uuid.uuid4()}")).status_code == 404


async def test_identities_go_with_the_account_and_are_in_its_export(
    oidc_app: FastAPI, engine: AsyncEngine
) -> None:
    login = login_name("v")
    async with browser(oidc_app) as c:
        await new_guest(c)
        await sign_in_with(c, login)
        me = (await c.get("/v1/me")).json()
        export = (await c.get("/v1/me/export")).json()
        assert [(i["provider"], i["subject"]) for i in export["identities"]] == [("op", login)]
        assert (await c.delete("/v1/me")).status_code == 204
    assert await identities_of(engine, me["id"]) == []


async def test_the_database_refuses_a_registered_account_with_no_way_to_sign_in(
    engine: AsyncEngine,
) -> None:
    account = uuid.uuid4()
    async with engine.connect() as conn:
        with pytest.raises(
            sa.exc.IntegrityError, match="needs an address, an identity or a passkey"
        ):
            async with conn.begin():
                await conn.execute(
                    sa.text("INSERT INTO users (id, is_anonymous, data) VALUES (:id, false, '{}')"),
                    {"id": account},
                )
        # With an identity in the same transaction (checked at commit) it is accepted...
        async with conn.begin():
            await conn.execute(
                sa.text("INSERT INTO users (id, is_anonymous, data) VALUES (:id, false, '{}')"),
                {"id": account},
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO identities (id, user_id, provider, subject) "
                    "VALUES (:id, :u, 'op', :s)"
                ),
                {"id": uuid.uuid4(), "u": account, "s": str(account)},
            )
        # ...and its last identity cannot be removed behind the API's back.
        with pytest.raises(
            sa.exc.IntegrityError, match="needs an address, an identity or a passkey"
        ):
            async with conn.begin():
                await conn.execute(
                    sa.text("DELETE FROM identities WHERE user_id = :u"), {"u": account}
                )
        async with conn.begin():  # deleting the account takes its identities along
            await conn.execute(sa.text("DELETE FROM users WHERE id = :u"), {"u": account})


GUEST = Starter(uuid.UUID(int=1), 1, anonymous=True)
MEMBER = Starter(uuid.UUID(int=2), 3, anonymous=False)
OTHER = uuid.UUID(int=3)


@pytest.mark.parametrize(
    ("starter", "linked_to", "email_owner", "trust", "outcome"),
    [
        # case 1: a registered user started it
        (MEMBER, None, None, False, Outcome.LINK),
        (MEMBER, None, OTHER, True, Outcome.LINK),  # trust applies to cases 3 and 4 only
        (MEMBER, MEMBER.user_id, None, False, Outcome.ALREADY_LINKED),
        (MEMBER, OTHER, None, False, Outcome.IDENTITY_TAKEN),
        (MEMBER, OTHER, OTHER, True, Outcome.IDENTITY_TAKEN),
        # case 2: the identity is linked already
        (GUEST, OTHER, None, False, Outcome.SIGN_IN),
        (None, OTHER, None, False, Outcome.SIGN_IN),
        (GUEST, OTHER, uuid.UUID(int=9), True, Outcome.SIGN_IN),
        # case 3: a guest started it
        (GUEST, None, None, False, Outcome.PROMOTE),
        (GUEST, None, OTHER, False, Outcome.PROMOTE),
        (GUEST, None, None, True, Outcome.PROMOTE),
        (GUEST, None, OTHER, True, Outcome.SIGN_IN_BY_EMAIL),
        # case 4: nobody started it
        (None, None, None, False, Outcome.CREATE),
        (None, None, OTHER, False, Outcome.CREATE),
        (None, None, OTHER, True, Outcome.SIGN_IN_BY_EMAIL),
    ],
)
def test_the_decision_of_section_13_as_a_table(
    starter: Starter | None,
    linked_to: uuid.UUID | None,
    email_owner: uuid.UUID | None,
    trust: bool,
    outcome: Outcome,
) -> None:
    assert decide(starter, linked_to, email_owner, trust) is outcome
