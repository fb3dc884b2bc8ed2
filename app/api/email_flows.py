"""Email code and link flows shared by the JSON API and the hosted pages (CONTRACT §6): convert a
guest, sign in, change the address.

A code is checked in statements of its own first (the attempt counts whatever follows:
``app.credentials.email_codes``); the rest is one transaction in which the code or link is
consumed together with the change it proves, and in which the session, if any, starts
(``sessions.store.start``: by ``start_converted`` for a conversion, by
``credential_flows.sign_in_account`` for a sign-in, as for a password); the application's claims
(``custom_claims``) are added once it has ended. Every flow is rate limited per client IP and per
address (``ANONID_LOGIN_RATE_LIMIT``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request

from app.api.credential_flows import limit_credentials, sign_in_account
from app.api.deps import Session, user_agent
from app.credentials.email_codes import CodeOwner, check_code, code_key, consume_code
from app.credentials.email_sign_in import account_for_login, request_login_code
from app.credentials.links import LinkTarget, Purpose, consume_link_token
from app.errors import AnonidError
from app.lifecycle import address_change, conversion
from app.lifecycle.addresses import email_key
from app.platform.pgpool import row_mapping
from app.services import Services
from app.sessions.store import Pair, start, with_app_claims


async def start_converted(
    conn: AsyncConnection, svc: Services, request: Request, account: Row[Any]
) -> Pair:
    """The session of a guest just registered in place, in the transaction that registered it:
    its session version moved on, so every other session of it ends (CONTRACT §4)."""
    return await start(conn, svc, account, user_agent=user_agent(request), end_others=True)


async def _consume_link_as_code(conn: AsyncConnection, token: str, purpose: Purpose) -> LinkTarget:
    """A sign-in or address-change link, whose endpoints speak of codes and links alike."""
    try:
        return await consume_link_token(conn, token, purpose)
    except AnonidError as exc:
        raise AnonidError(
            "code_expired" if exc.code == "token_expired" else "invalid_code"
        ) from None


def _address(session: Session, field: str) -> str | None:
    """An address of the session's user row (read with the session): a code's rate-limit key."""
    return None if session.user is None else row_mapping(session.user)[field]


# Converting a guest


async def convert_by_code(request: Request, svc: Services, session: Session, code: str) -> Pair:
    """The six digits of the conversion email, typed in the guest's own session (``email_code``)."""
    if not session.claims.anon:
        raise AnonidError("already_registered")
    await limit_credentials(request, svc, _address(session, "pending_email"))
    owner = CodeOwner("setup", user_id=session.claims.sub)
    async with svc.single_statement() as conn:
        attempt = await check_code(conn, code_key(svc), owner, code)
    async with svc.engine.begin() as conn:
        row = await conversion.redeem_setup_code(conn, svc.settings, attempt, session.claims.sv)
        pair = await start_converted(conn, svc, request, row)
    return await with_app_claims(svc, pair)


async def convert_by_link(request: Request, svc: Services, token: str) -> Pair:
    """The setup link, without a password (``email_link``)."""
    async with svc.engine.begin() as conn:
        row = await conversion.redeem_setup_link(conn, svc.settings, token, None)
        pair = await start_converted(conn, svc, request, row)
    return await with_app_claims(svc, pair)


# Signing in


async def send_login_code(request: Request, svc: Services, email: str) -> None:
    """A sign-in code and link to ``email`` (a normal form) if an account has it; the same work
    either way."""
    await limit_credentials(request, svc, email)
    async with svc.engine.begin() as conn:
        await request_login_code(conn, svc.settings, code_key(svc), email)


async def sign_in_by_code(
    request: Request, svc: Services, session: Session | None, email: str, code: str
) -> tuple[Pair, str | None]:
    """The address and the six digits of its sign-in email: the pair and ``merged_from``."""
    await limit_credentials(request, svc, email)
    key = email_key(email)
    if "\x00" in key:  # no stored address has one (PostgreSQL text cannot hold NUL)
        raise AnonidError("invalid_code")
    async with svc.single_statement() as conn:
        attempt = await check_code(conn, code_key(svc), CodeOwner("login", email=key), code)
    async with svc.engine.begin() as conn:
        account = await account_for_login(conn, await consume_code(conn, attempt))
        pair, merged_from = await sign_in_account(conn, svc, session, account, user_agent(request))
    return await with_app_claims(svc, pair), merged_from


async def sign_in_by_link(
    request: Request, svc: Services, session: Session | None, token: str
) -> tuple[Pair, str | None]:
    """The link of a sign-in email: the pair and ``merged_from``."""
    await limit_credentials(request, svc, None)
    async with svc.engine.begin() as conn:
        target = await _consume_link_as_code(conn, token, "login")
        account = await account_for_login(conn, target)
        pair, merged_from = await sign_in_account(conn, svc, session, account, user_agent(request))
    return await with_app_claims(svc, pair), merged_from


# Changing the address


async def send_email_change(request: Request, svc: Services, session: Session, email: str) -> None:
    """A code and link to the new address ``email`` (a normal form) unless it is taken."""
    await limit_credentials(request, svc, email)
    async with svc.engine.begin() as conn:
        await address_change.request_email_change(
            conn, svc.settings, code_key(svc), session.claims.sub, session.claims.sv, email
        )


async def change_email_by_code(
    request: Request, svc: Services, session: Session, code: str
) -> Row[Any]:
    """The six digits of the address-change email, typed in a session of the account."""
    if session.claims.anon:
        raise AnonidError("forbidden", "Only a registered account can do that.")
    await limit_credentials(request, svc, _address(session, "email"))
    owner = CodeOwner("email_change", user_id=session.claims.sub)
    async with svc.single_statement() as conn:
        attempt = await check_code(conn, code_key(svc), owner, code)
    async with svc.engine.begin() as conn:
        target = await consume_code(conn, attempt)
        return await address_change.change_email(conn, svc.settings, target, session.claims.sv)


async def change_email_by_link(request: Request, svc: Services, token: str) -> Row[Any]:
    """The link of the address-change email, from any browser."""
    await limit_credentials(request, svc, None)
    async with svc.engine.begin() as conn:
        target = await _consume_link_as_code(conn, token, "email_change")
        return await address_change.change_email(conn, svc.settings, target)
