"""Sign-in by email (CONTRACT §5, §6): a code and a link sent to a registered account's address.

Any registered account with a verified address can sign in this way, with or without a
password. Asking answers nothing about the address: for one without an account the same work is
done and undone (``email_codes.send_nothing``), so the answer is the same and as slow, and no
email goes out. A used code or link names the account; the sign-in itself (merging a guest,
starting the session) is the caller's, as for a password.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from app.credentials.email_codes import send_code, send_nothing
from app.credentials.links import LinkTarget, end_link_tokens
from app.errors import AnonidError
from app.lifecycle.users import USER_COLUMNS
from app.settings import Settings

_ACCOUNT = sa.text("SELECT id, email FROM users WHERE email = :email AND NOT is_anonymous")
# The account as it is now, if it still has the address the code or link was sent to.
_SIGNED_IN = sa.text(
    f"SELECT {USER_COLUMNS} FROM users WHERE id = :id AND NOT is_anonymous AND email = :email"
)


async def request_login_code(
    conn: AsyncConnection, settings: Settings, key: bytes, email: str
) -> None:
    """Send a ``login_code`` email (link and code) if ``email`` (a normal form) belongs to a
    registered account; otherwise nothing, at the same cost. Earlier sign-in codes of the
    account end; earlier links stay good until they expire or one is used."""
    account = (await conn.execute(_ACCOUNT, {"email": email})).first()
    if account is None:
        await send_nothing(conn, settings, key, "login", email)
        return
    await send_code(conn, settings, key, "login", account.id, account.email)


async def account_for_login(conn: AsyncConnection, target: LinkTarget) -> Row[Any]:
    """The account a used sign-in code or link names; every other sign-in link and code of it
    ends. ``invalid_code`` when the account changed its address since the email was sent."""
    row = (await conn.execute(_SIGNED_IN, {"id": target.user_id, "email": target.email})).first()
    if row is None:
        raise AnonidError("invalid_code")
    await end_link_tokens(conn, target.user_id, "login")
    return row
