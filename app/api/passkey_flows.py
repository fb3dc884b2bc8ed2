"""Passkey flows (CONTRACT §14) between the routes (the JSON API and the hosted pages) and the
rules: options, adding a passkey, signing in with one, and the session that follows.

``passkey_session`` is the one place where a passkey begins a session: ``sessions.start``, in
the transaction that added the passkey or recorded its use, as every way of signing in does. No
connection is held while a signature is checked: the challenge is spent in one statement (a
refused answer spends it too), the answer verified with no connection, and the change made in
one transaction.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request

from app.api.credential_flows import limit_credentials
from app.api.deps import Session, user_agent
from app.credentials import passkey_store, passkeys, webauthn_challenges
from app.credentials.links import consume_link_token
from app.credentials.passkeys import PASSKEY_REFUSED
from app.errors import AnonidError
from app.lifecycle.addresses import EMAIL_UNIQUE_INDEX
from app.services import Services
from app.sessions.store import Pair, start, with_app_claims

CHALLENGE_ID_HEADER = "X-Anonid-Challenge-Id"


async def passkey_session(
    conn: AsyncConnection,
    svc: Services,
    request: Request,
    account: Any,
    session: Session | None,
    *,
    converted: bool,
) -> Pair:
    """THE one place a passkey begins a session for ``account``, in the caller's transaction
    (the ``custom_claims`` hook is asked once it has ended: ``with_app_claims``). A
    guest converted in place ends its other sessions (its version moved on, CONTRACT §4); a
    registered session the request came with is replaced by the new one (renewed); a merged
    guest's sessions went with the guest."""
    replaces = None
    if session is not None and not session.claims.anon and not converted:
        replaces = (session.claims.sub, session.claims.sid)
    return await start(
        conn,
        svc,
        account,
        user_agent=user_agent(request),
        end_others=converted,
        replaces=replaces,
    )


# The browser's challenge cookie binds a sign-in challenge to the browser that asked (login
# CSRF: an attacker's assertion posted from a victim's browser is refused). With
# ANONID_COOKIE_SECURE it is __Host- prefixed, so no sibling subdomain can plant one.


def challenge_cookie_name(svc: Services) -> str:
    prefix = "__Host-" if svc.settings.cookie_secure else ""
    return f"{prefix}{svc.cookies.name}_webauthn"


def _challenge_cookie(svc: Services, value: str) -> str:
    max_age = int(webauthn_challenges.CHALLENGE_TTL.total_seconds())
    secure = "; Secure" if svc.settings.cookie_secure else ""
    name = challenge_cookie_name(svc)
    return f"{name}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax{secure}"


async def registration_options(svc: Services, session: Session) -> dict[str, Any]:
    """Creation options for the session's account, with a challenge only this session can use."""
    user_id, version = session.claims.sub, session.claims.sv
    async with svc.single_statement() as conn:
        account = await passkey_store.session_account(conn, user_id, version)
        existing = await passkey_store.credential_ids(conn, user_id)
        challenge = await webauthn_challenges.issue_registration_challenge(
            conn, user_id, version, session.claims.sid
        )
    return passkeys.creation_options(svc.settings, user_id, account.email, challenge, existing)


async def add_passkey(
    request: Request,
    svc: Services,
    session: Session,
    credential: Any,
    name: str | None,
    *,
    setup_token: str | None = None,
) -> Pair:
    """Verify ``navigator.credentials.create()``'s answer and store the passkey; a guest becomes
    registered in place, taking the address of ``setup_token`` (its own setup link, from the
    hosted setup page) when given. The session that follows."""
    await limit_credentials(request, svc, None)
    cleaned = passkey_store.clean_name(name)
    attestation = passkeys.parse_attestation(credential)
    user_id, version = session.claims.sub, session.claims.sv
    async with svc.single_statement() as conn:
        live = await webauthn_challenges.consume_registration_challenge(
            conn, attestation.challenge, user_id, version, session.claims.sid
        )
    if not live:
        raise AnonidError("invalid_passkey")
    verified = passkeys.verify_attestation(svc.settings, attestation)
    try:
        async with svc.engine.begin() as conn:
            email = None
            if setup_token is not None:
                target = await consume_link_token(conn, setup_token, "setup")
                if target.user_id != user_id:
                    raise AnonidError("invalid_token")
                email = target.email
            account = await passkey_store.add_passkey(
                conn, svc.settings, user_id, version, verified, cleaned, email=email
            )
            converted = session.claims.anon
            pair = await passkey_session(conn, svc, request, account, session, converted=converted)
    except sqlalchemy.exc.IntegrityError as exc:
        # The link's address was verified by another account meanwhile: nothing changed.
        if EMAIL_UNIQUE_INDEX in str(exc.orig):
            raise AnonidError("email_taken") from None
        raise
    return await with_app_claims(svc, pair)


async def login_options(request: Request, svc: Services) -> tuple[dict[str, Any], str, str]:
    """Request options for discoverable credentials: the options, the challenge id (for
    ``X-Anonid-Challenge-Id``) and the Set-Cookie value binding it to this browser (the
    browser's secret is kept, so two tabs signing in at once both succeed)."""
    limiter = svc.extras.get("limiter")
    if limiter is not None:
        await limiter.hit_sign_in_challenge(request)
    current = request.cookies.get(challenge_cookie_name(svc))
    secret = (
        current if webauthn_challenges.well_formed(current) else webauthn_challenges.new_secret()
    )
    async with svc.single_statement() as conn:
        issued = await webauthn_challenges.issue_login_challenge(conn, secret)
    options = passkeys.request_options(svc.settings, issued.challenge)
    return options, issued.client_id, _challenge_cookie(svc, secret)


async def sign_in(
    request: Request, svc: Services, session: Session | None, credential: Any
) -> tuple[Pair, UUID | None]:
    """Verify ``navigator.credentials.get()``'s answer for a challenge this browser (cookie) or
    client (``X-Anonid-Challenge-Id``) asked for; the session of the passkey's account and, when
    a guest session came along, the guest's id once merged into it."""
    await limit_credentials(request, svc, None)
    assertion = passkeys.parse_assertion(credential)
    async with svc.single_statement() as conn:
        live = await webauthn_challenges.consume_login_challenge(
            conn,
            assertion.challenge,
            request.cookies.get(challenge_cookie_name(svc)),
            request.headers.get(CHALLENGE_ID_HEADER),
        )
        stored = await passkey_store.find_passkey(conn, assertion.credential_id) if live else None
    if stored is None:
        raise AnonidError("invalid_credentials", PASSKEY_REFUSED)
    new_count = passkeys.verify_assertion(
        svc.settings,
        assertion,
        owner=stored.user_id,
        public_key=stored.public_key,
        sign_count=stored.sign_count,
    )
    guest = None
    if session is not None and session.claims.anon:
        guest = (session.claims.sub, session.claims.sv)
    async with svc.engine.begin() as conn:
        account, merged_from = await passkey_store.sign_in_with_passkey(
            conn, svc.settings, stored, new_count, guest, svc.hooks
        )
        pair = await passkey_session(conn, svc, request, account, session, converted=False)
    return await with_app_claims(svc, pair), merged_from
