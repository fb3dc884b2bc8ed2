"""Password flows shared by the JSON API and the hosted pages, in short database visits around
the hashing.

argon2 keeps a worker thread busy for tens of milliseconds. A request that held a pooled
connection meanwhile let a burst of password guesses starve every other request of connections
(the outside review measured another user's answer go from 12 ms to 1.7 s). So each flow reads
what it needs in one short statement, hashes with no connection held, then writes in one
transaction whose guarded statements refuse the write if the account or link moved on meanwhile.
The ``custom_claims`` hook is asked once that transaction has ended (``with_app_claims``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request

from app.api.deps import Session, user_agent
from app.credentials import passwords
from app.credentials.links import Purpose, peek_link_token
from app.credentials.password_hashing import check_policy, hash_password
from app.lifecycle import conversion
from app.services import Services
from app.sessions.store import Pair, start, with_app_claims


async def limit_credentials(request: Request, svc: Services, email: str | None) -> None:
    """One credential request, counted per client IP and per address (``rate_limited``)."""
    limiter = svc.extras.get("limiter")
    if limiter is not None:
        await limiter.hit_credentials(request, email)


async def login_and_merge(
    svc: Services, session: Session | None, email: str, password: str, user_agent: str | None
) -> tuple[Pair, str | None]:
    """Check the password, then sign in as ``sign_in_account`` does."""
    async with svc.single_statement() as conn:
        account = await passwords.find_account(conn, email)
    rehash = await passwords.check_login(account, password)
    assert account is not None  # check_login refuses a missing account
    async with svc.engine.begin() as conn:
        row = await passwords.confirm_login(conn, account, rehash)
        pair, merged_from = await sign_in_account(conn, svc, session, row, user_agent)
    return await with_app_claims(svc, pair), merged_from


async def sign_in_account(
    conn: AsyncConnection,
    svc: Services,
    session: Session | None,
    account: Row[Any],
    user_agent: str | None,
) -> tuple[Pair, str | None]:
    """Every sign-in to an existing account (password, email code or link), in its transaction:
    fold in the guest of ``session``, if any (the ``before_merge`` hook may refuse), and start a
    session of the account. The pair, and ``merged_from`` (the guest's id) when a guest was
    merged; the caller adds the application's claims once the transaction has ended
    (``with_app_claims``). A registered session the request came with ends (the browser now holds
    the new one); a guest's goes with the guest when merged, and is left alone with it when not."""
    merged = None
    if session is not None and session.claims.anon and svc.settings.merge_on_login:
        merged = await conversion.merge_guest(
            conn, svc.settings, session.claims.sub, session.claims.sv, account.id, svc.hooks
        )
    pair = await start(
        conn,
        svc,
        merged if merged is not None else account,
        user_agent=user_agent,
        replaces=None
        if session is None or session.claims.anon
        else (session.claims.sub, session.claims.sid),
    )
    return pair, None if merged is None or session is None else str(session.claims.sub)


async def change_password(
    request: Request,
    svc: Services,
    session: Session,
    current_password: str | None,
    new_password: str,
) -> Pair:
    """Replace the password of the session's account after checking the current one, rate
    limited like login (per client IP and per the account's address); every other session
    ends and the caller gets a new one."""
    async with svc.single_statement() as conn:
        account = await passwords.registered_account(conn, session.claims.sub, session.claims.sv)
    await limit_credentials(request, svc, account.email)
    new_hash = await passwords.check_password_change(
        svc.settings, account, current_password, new_password
    )
    async with svc.engine.begin() as conn:
        row = await passwords.change_password(conn, svc.settings, account, new_hash)
        pair = await start(conn, svc, row, user_agent=user_agent(request), end_others=True)
    return await with_app_claims(svc, pair)


async def redeem_with_password(
    svc: Services, purpose: Purpose, token: str, password: str, user_agent: str | None
) -> Pair:
    """Finish a setup or reset link with a new password; every other session of the account
    ends and the caller gets a new one. A dead link is refused before any hashing, so an
    unauthenticated caller cannot make the server hash for nothing."""
    async with svc.single_statement() as conn:
        await peek_link_token(conn, token, purpose)
    password_hash = await hash_password(check_policy(password, svc.settings.password_min_length))
    async with svc.engine.begin() as conn:
        if purpose == "setup":
            row = await conversion.redeem_setup_link(conn, svc.settings, token, password_hash)
        else:
            row = await passwords.confirm_password_reset(conn, svc.settings, token, password_hash)
        pair = await start(conn, svc, row, user_agent=user_agent, end_others=True)
    return await with_app_claims(svc, pair)
