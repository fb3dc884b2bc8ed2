"""Password flows shared by the JSON API and the hosted pages, in short database visits around
the hashing.

argon2 keeps a worker thread busy for tens of milliseconds. A request that held a pooled
connection meanwhile let a burst of password guesses starve every other request of connections
(the outside review measured another user's answer go from 12 ms to 1.7 s). So each flow reads
what it needs in one short statement, hashes with no connection held, then writes in one
transaction whose guarded statements refuse the write if the account or link moved on meanwhile.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Row
from starlette.requests import Request

from app.api.deps import Session
from app.lifecycle import conversion, credentials
from app.lifecycle.passwords import check_policy, hash_password
from app.lifecycle.tokens import Purpose, peek_link_token
from app.services import Services


async def limit_credentials(request: Request, svc: Services, email: str | None) -> None:
    """One credential request, counted per client IP and per address (``rate_limited``)."""
    limiter = svc.extras.get("limiter")
    if limiter is not None:
        await limiter.hit_credentials(request, email)


async def login_and_merge(
    svc: Services, session: Session | None, email: str, password: str
) -> tuple[Row[Any], str | None]:
    """Check the password, then fold in the guest of ``session``, if any: the account and
    ``merged_from`` (the guest's id) when a guest was merged."""
    async with svc.single_statement() as conn:
        account = await credentials.find_account(conn, email)
    rehash = await credentials.check_login(account, password)
    assert account is not None  # check_login refuses a missing account
    async with svc.engine.begin() as conn:
        row = await credentials.confirm_login(conn, account, rehash)
        if session is None or not session.claims.anon or not svc.settings.merge_on_login:
            return row, None
        merged = await conversion.merge_guest(
            conn, svc.settings, session.claims.sub, session.claims.sv, row.id
        )
    if merged is None:
        return row, None
    return merged, str(session.claims.sub)


async def change_password(
    request: Request, svc: Services, session: Session, current_password: str, new_password: str
) -> Row[Any]:
    """Replace the password of the session's account after checking the current one, rate
    limited like login (per client IP and per the account's address)."""
    async with svc.single_statement() as conn:
        account = await credentials.registered_account(conn, session.claims.sub, session.claims.sv)
    await limit_credentials(request, svc, account.email)
    new_hash = await credentials.check_password_change(
        svc.settings, account, current_password, new_password
    )
    async with svc.engine.begin() as conn:
        return await credentials.change_password(conn, svc.settings, account, new_hash)


async def redeem_with_password(
    svc: Services, purpose: Purpose, token: str, password: str
) -> Row[Any]:
    """Finish a setup or reset link with a new password. A dead link is refused before any
    hashing, so an unauthenticated caller cannot make the server hash for nothing."""
    async with svc.single_statement() as conn:
        await peek_link_token(conn, token, purpose)
    password_hash = await hash_password(check_policy(password, svc.settings.password_min_length))
    async with svc.engine.begin() as conn:
        if purpose == "setup":
            return await conversion.redeem_setup_link(conn, svc.settings, token, password_hash)
        return await credentials.confirm_password_reset(conn, svc.settings, token, password_hash)
