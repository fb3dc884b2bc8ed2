"""Provider identities (CONTRACT §13): link, sign in, promote a guest, create an account.

``decide`` is the rule as a pure function of what the transaction found (tested as a table);
``settle`` finds those facts under row locks and carries the outcome out, in the caller's one
transaction:

    who started   identity linked to    outcome
    registered    nobody                link it to the starter (``user.identity_linked``)
    registered    the starter           nothing to do
    registered    another account       ``identity_taken``, nothing changed
    a guest       an account            sign in to it, merging the guest
    nobody        an account            sign in to it
    a guest       nobody                the guest becomes registered in place (``oidc``)
    nobody        nobody                a new registered account with the identity

except that with ``TRUST_EMAIL``, when the provider's verified address belongs to an account, the
last two sign in to that account instead (linking the identity, merging the guest). A new or
promoted account takes the provider's address only if it is verified and no account has it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import AnonidError, FlowError
from app.hooks.client import Hooks
from app.lifecycle.addresses import parse_email
from app.lifecycle.conversion import merge_guest
from app.lifecycle.events import record_event
from app.lifecycle.promotion import create_registered, promote_guest
from app.lifecycle.users import USER_COLUMNS
from app.platform.ids import new_id
from app.settings import Settings

# The unique constraint on (provider, subject): two first sign-ins with one identity at once.
IDENTITY_UNIQUE = "uq_identities_provider_subject"
MAX_PROVIDER_EMAIL = 320


class Outcome(StrEnum):
    LINK = "link"
    ALREADY_LINKED = "already_linked"
    IDENTITY_TAKEN = "identity_taken"
    SIGN_IN = "sign_in"
    SIGN_IN_BY_EMAIL = "sign_in_by_email"
    PROMOTE = "promote"
    CREATE = "create"


@dataclass(frozen=True, slots=True)
class Starter:
    """Who started the flow, as the database has them now."""

    user_id: UUID
    session_version: int
    anonymous: bool


@dataclass(frozen=True, slots=True)
class ProviderIdentity:
    provider: str
    subject: str
    email: str | None  # as the provider gave it
    email_verified: bool

    @classmethod
    def from_claims(cls, provider: str, claims: dict[str, Any]) -> ProviderIdentity:
        email = claims.get("email")
        if not isinstance(email, str) or not email or len(email) > MAX_PROVIDER_EMAIL:
            email = None
        # Some providers send "true" as a string; anything else is not a verification.
        verified = claims.get("email_verified") in (True, "true")
        return cls(provider, str(claims["sub"]), email, email is not None and verified)

    @property
    def verified_address(self) -> str | None:
        """The address in anonid's normal form, when the provider verified it and it is one."""
        if not self.email_verified or self.email is None:
            return None
        try:
            return parse_email(self.email)
        except AnonidError:
            return None


def decide(
    starter: Starter | None, linked_to: UUID | None, email_owner: UUID | None, trust_email: bool
) -> Outcome:
    """The outcome of a provider sign-in; ``email_owner`` is the registered account holding the
    provider's verified address, if any."""
    if starter is not None and not starter.anonymous:
        if linked_to is None:
            return Outcome.LINK
        return Outcome.ALREADY_LINKED if linked_to == starter.user_id else Outcome.IDENTITY_TAKEN
    if linked_to is not None:
        return Outcome.SIGN_IN
    if trust_email and email_owner is not None:
        return Outcome.SIGN_IN_BY_EMAIL
    return Outcome.PROMOTE if starter is not None else Outcome.CREATE


class CreationNeedsApproval(Exception):
    """The outcome is a new account and the ``before_user_created`` hook must be asked first:
    the caller rolls back, asks it with no connection held, and settles again."""


@dataclass(frozen=True, slots=True)
class Settled:
    outcome: Outcome
    account: Row[Any]  # the account signed in to, linked to or made
    merged_from: UUID | None = None

    @property
    def starts_session(self) -> bool:
        """Every outcome but a link by a signed-in account starts a session."""
        return self.outcome not in (Outcome.LINK, Outcome.ALREADY_LINKED)


_STARTER = sa.text("SELECT id, is_anonymous, session_version FROM users WHERE id = :id FOR UPDATE")
_LINKED = sa.text(
    "SELECT id, user_id FROM identities WHERE provider = :provider AND subject = :subject "
    "FOR UPDATE"
)
_EMAIL_OWNER = sa.text("SELECT id FROM users WHERE email = :email AND NOT is_anonymous")
_ACCOUNT = sa.text(f"SELECT {USER_COLUMNS} FROM users WHERE id = :id")
_INSERT = sa.text(
    """
INSERT INTO identities (id, user_id, provider, subject, email, email_verified, last_sign_in_at)
VALUES (:id, :user_id, :provider, :subject, :email, :email_verified, now())
"""
)
_SEEN = sa.text(
    """
UPDATE identities SET email = :email, email_verified = :email_verified, last_sign_in_at = now()
WHERE id = :id
"""
)


async def current_starter(
    conn: AsyncConnection, user_id: UUID, session_version: int
) -> Starter | None:
    """The account that started the flow, locked, if it is still at that session version."""
    row = (await conn.execute(_STARTER, {"id": user_id})).first()
    if row is None or row.session_version != session_version:
        return None
    return Starter(row.id, row.session_version, row.is_anonymous)


async def _link(
    conn: AsyncConnection, settings: Settings, user_id: UUID, identity: ProviderIdentity
) -> None:
    await conn.execute(
        _INSERT,
        {
            "id": new_id(),
            "user_id": user_id,
            "provider": identity.provider,
            "subject": identity.subject,
            "email": identity.email,
            "email_verified": identity.email_verified,
        },
    )
    await record_event(
        conn,
        "user.identity_linked",
        user_id,
        {"id": str(user_id), "provider": identity.provider},
        settings.webhook_url_list,
    )


async def settle(
    conn: AsyncConnection,
    settings: Settings,
    identity: ProviderIdentity,
    starter: Starter | None,
    *,
    trust_email: bool,
    hooks: Hooks | None = None,
    creation_approved: bool = True,
) -> Settled:
    """Carry out the outcome for ``identity`` started by ``starter`` (locked by
    ``current_starter``). Raises ``FlowError("identity_taken")``; a unique violation (the
    address or the identity taken by a concurrent transaction) rolls the caller back. A new
    account needs ``creation_approved`` (else ``CreationNeedsApproval``); a merge asks the
    ``before_merge`` hook of ``hooks``."""
    linked = (
        await conn.execute(_LINKED, {"provider": identity.provider, "subject": identity.subject})
    ).first()
    address = identity.verified_address
    owner = None
    if address is not None:
        owner = await conn.scalar(_EMAIL_OWNER, {"email": address})
    outcome = decide(starter, linked.user_id if linked else None, owner, trust_email)
    seen = {"email": identity.email, "email_verified": identity.email_verified}

    if outcome is Outcome.IDENTITY_TAKEN:
        raise FlowError("identity_taken")
    if outcome in (Outcome.LINK, Outcome.ALREADY_LINKED):
        assert starter is not None
        if linked is None:
            await _link(conn, settings, starter.user_id, identity)
        else:
            await conn.execute(_SEEN, {"id": linked.id, **seen})
        account = (await conn.execute(_ACCOUNT, {"id": starter.user_id})).one()
        return Settled(outcome, account)
    if outcome is Outcome.PROMOTE:
        assert starter is not None
        free_address = address if owner is None else None
        promoted = await promote_guest(
            conn,
            settings,
            starter.user_id,
            starter.session_version,
            email=free_address,
            method="oidc",
        )
        if promoted is None:  # current_starter locked it: cannot happen, but never half-do it
            raise FlowError("invalid_state", "the guest changed during the sign-in")
        await _link(conn, settings, promoted.id, identity)
        # Read again: the row's ``methods`` now include the identity just linked.
        return Settled(outcome, (await conn.execute(_ACCOUNT, {"id": promoted.id})).one())
    if outcome is Outcome.CREATE:
        if not creation_approved:
            raise CreationNeedsApproval
        created = await create_registered(conn, address if owner is None else None)
        await _link(conn, settings, created.id, identity)
        return Settled(outcome, (await conn.execute(_ACCOUNT, {"id": created.id})).one())

    # Sign in to an existing account: the identity's, or the trusted address's owner.
    if linked is not None:
        account_id = linked.user_id
        await conn.execute(_SEEN, {"id": linked.id, **seen})
    else:
        assert owner is not None
        account_id = owner
        await _link(conn, settings, account_id, identity)
    account = (await conn.execute(_ACCOUNT, {"id": account_id})).one()
    if starter is not None and starter.anonymous and settings.merge_on_login:
        merged = await merge_guest(
            conn, settings, starter.user_id, starter.session_version, account_id, hooks
        )
        if merged is not None:
            return Settled(outcome, merged, starter.user_id)
    return Settled(outcome, account)


_LIST = sa.text(
    """
SELECT i.id, i.provider, i.subject, i.email, i.created_at
FROM users u JOIN identities i ON i.user_id = u.id
WHERE u.id = :id
ORDER BY i.created_at, i.id
"""
)
_SESSION_USER = sa.text("SELECT id, email FROM users WHERE id = :id AND session_version = :sv")
_LOCK_SESSION_USER = sa.text(
    "SELECT id, email FROM users WHERE id = :id AND session_version = :sv FOR UPDATE"
)
# The account keeps a way to sign in: its verified address (codes, links, password reset),
# another identity or a passkey. Run with the account locked, so two removals cannot both see
# the other's identity (or passkey) as the one that remains.
_REMOVE = sa.text(
    """
DELETE FROM identities
WHERE id = :identity AND user_id = :id
  AND (:has_email
       OR EXISTS (SELECT 1 FROM identities o WHERE o.user_id = :id AND o.id <> :identity)
       OR EXISTS (SELECT 1 FROM passkeys p WHERE p.user_id = :id))
RETURNING id
"""
)
_OWNED = sa.text("SELECT 1 FROM identities WHERE id = :identity AND user_id = :id")


def identity_view(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "provider": row.provider,
        "subject": row.subject,
        "email": row.email,
        "created_at": row.created_at.isoformat(),
    }


async def identities_of(conn: AsyncConnection, user_id: UUID) -> list[dict[str, Any]]:
    """The account's identities, oldest first (the console shows them as the API does)."""
    return [identity_view(row) for row in await conn.execute(_LIST, {"id": user_id})]


async def list_identities(
    conn: AsyncConnection, user_id: UUID, session_version: int
) -> list[dict[str, Any]]:
    """The identities of the session's account (``invalid_session`` when it moved on)."""
    if (await conn.execute(_SESSION_USER, {"id": user_id, "sv": session_version})).first() is None:
        raise AnonidError("invalid_session")
    return await identities_of(conn, user_id)


async def remove_identity(
    conn: AsyncConnection, user_id: UUID, session_version: int, identity_id: UUID
) -> None:
    """Unlink one identity of the session's account; ``not_found`` when it is not one of its
    identities, ``last_credential`` when the account would keep no way to sign in."""
    user = (await conn.execute(_LOCK_SESSION_USER, {"id": user_id, "sv": session_version})).first()
    if user is None:
        raise AnonidError("invalid_session")
    params = {"identity": identity_id, "id": user_id, "has_email": user.email is not None}
    if (await conn.execute(_REMOVE, params)).first() is not None:
        return
    if (await conn.execute(_OWNED, params)).first() is None:
        raise AnonidError("not_found")
    raise AnonidError("last_credential")
