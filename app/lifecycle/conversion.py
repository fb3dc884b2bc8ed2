"""The conversion state machine of CONTRACT §6: request, cancel, redeem, and merge on login.

Every transition is one guarded statement on ``users``; the guard is the state it leaves from,
so PostgreSQL settles every race (two clicks, two guests, a login during a request):

    transition  from                  to          guard in the WHERE clause
    request     anonymous | pending   pending     is_anonymous AND session_version = :sv
    cancel      pending               anonymous   is_anonymous AND session_version = :sv
    redeem      pending (valid link)  registered  is_anonymous, link consumed in the same tx
                (or code)                         (by code also session_version = :sv: the
                                                  guest's own session typed it)
    merge       anonymous | pending   (deleted)   is_anonymous AND session_version = :sv,
                                                  account registered and locked, merged
                                                  data within ANONID_DATA_MAX_BYTES, and the
                                                  before_merge hook's consent when it is on
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any
from uuid import UUID

import orjson
import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from app.credentials.email_codes import Attempt, consume_code, issue_with_code
from app.credentials.links import LinkTarget, consume_link_token, end_link_tokens
from app.errors import AnonidError
from app.hooks.calls import before_merge
from app.hooks.client import Hooks
from app.lifecycle.addresses import EMAIL_UNIQUE_INDEX
from app.lifecycle.events import record_event
from app.lifecycle.users import USER_COLUMNS, user_columns
from app.outbox.enqueue import enqueue_email
from app.settings import Settings

_QUALIFIED = user_columns("users")

_REQUEST = sa.text(
    f"""
UPDATE users
SET pending_email = :email, pending_until = now() + CAST(:ttl AS interval), updated_at = now()
WHERE id = :id AND session_version = :sv AND is_anonymous
RETURNING {USER_COLUMNS}
"""
)

_CANCEL = sa.text(
    f"""
UPDATE users SET pending_email = NULL, pending_until = NULL, updated_at = now()
WHERE id = :id AND session_version = :sv AND is_anonymous
RETURNING {USER_COLUMNS}
"""
)

# The only statement that turns an anonymous account into a registered one.
_PROMOTE = sa.text(
    f"""
UPDATE users
SET is_anonymous = false, email = :email, password_hash = :hash, username = NULL,
    converted_at = now(), session_version = session_version + 1,
    pending_email = NULL, pending_until = NULL, updated_at = now()
WHERE id = :id AND is_anonymous AND (CAST(:sv AS integer) IS NULL OR session_version = :sv)
RETURNING {USER_COLUMNS}
"""
)

# The guest goes only if the account exists (and is locked) and the merged document fits in
# ANONID_DATA_MAX_BYTES, so no data is ever dropped and no login grows an account past the limit
# (four guests merged in turn grew one to 240 kB, after which every PATCH on it was 413). Both
# rows are locked before the merge is computed, so it reads the versions a concurrent PATCH
# committed; MATERIALIZED computes it once for the size check and the UPDATE.
_MERGE = sa.text(
    f"""
WITH account AS (
    SELECT id, data FROM users WHERE id = :account AND NOT is_anonymous FOR UPDATE
), guest_row AS (
    SELECT id, data FROM users
    WHERE id = :guest AND session_version = :sv AND is_anonymous
    FOR UPDATE
), merged AS MATERIALIZED (
    SELECT jsonb_merge_guest(account.data, guest_row.data) AS data
    FROM account, guest_row
), guest AS (
    DELETE FROM users
    WHERE id IN (SELECT id FROM guest_row)
      AND EXISTS (SELECT FROM merged WHERE octet_length(merged.data::text) <= :max)
    RETURNING id
)
UPDATE users SET data = merged.data, updated_at = now()
FROM merged, guest
WHERE users.id = :account
RETURNING {_QUALIFIED}
"""
)

# The merge a before_merge hook replaced: the hook's document becomes the account's data and the
# guest goes, both only if the document fits (jsonb's text, the form the stored size is read in,
# may be longer than the compact JSON the hook's answer was checked as).
_MERGE_REPLACED = sa.text(
    f"""
WITH fits AS (
    SELECT octet_length(CAST(:data AS jsonb)::text) <= :max AS ok
), guest AS (
    DELETE FROM users
    WHERE id = :guest AND session_version = :sv AND is_anonymous AND (SELECT ok FROM fits)
    RETURNING id
)
UPDATE users SET data = CAST(:data AS jsonb), updated_at = now()
FROM guest
WHERE users.id = :account
RETURNING {_QUALIFIED}
"""
)
# Both rows, locked in the order _MERGE locks them, before the before_merge hook is asked.
_LOCK_ACCOUNT = sa.text(
    f"SELECT {USER_COLUMNS} FROM users WHERE id = :account AND NOT is_anonymous FOR UPDATE"
)
_LOCK_GUEST = sa.text(
    f"SELECT {USER_COLUMNS} FROM users"
    " WHERE id = :guest AND session_version = :sv AND is_anonymous FOR UPDATE"
)

_OWNER = sa.text("SELECT id, email FROM users WHERE email = :email AND NOT is_anonymous")
_STATE = sa.text("SELECT is_anonymous, session_version FROM users WHERE id = :id")
_GUEST = sa.text("SELECT 1 FROM users WHERE id = :guest AND session_version = :sv AND is_anonymous")

log = logging.getLogger("anonid.merge")


async def _refusal(conn: AsyncConnection, user_id: UUID, session_version: int) -> AnonidError:
    """Why a guarded transition on the caller's own account matched no row."""
    row = (await conn.execute(_STATE, {"id": user_id})).first()
    if row is None or row.session_version != session_version:
        return AnonidError("invalid_session")
    return AnonidError("already_registered")


async def request_conversion(
    conn: AsyncConnection,
    settings: Settings,
    code_key: bytes,
    user_id: UUID,
    session_version: int,
    email: str,
) -> Row[Any]:
    """Make the guest pending for ``email`` and queue the one email that fits.

    Free address: a setup link and a code (earlier links to the same address stay valid, earlier
    codes end). Taken address: no link, no code, a note to its owner instead. The caller sees the
    same state either way. Links and codes to any other address end here.
    """
    ttl = timedelta(hours=settings.setup_token_ttl_hours)
    params = {"id": user_id, "sv": session_version, "email": email, "ttl": ttl}
    row = (await conn.execute(_REQUEST, params)).first()
    if row is None:
        raise await _refusal(conn, user_id, session_version)
    await end_link_tokens(conn, user_id, "setup", except_email=email)
    owner = (await conn.execute(_OWNER, {"email": email})).first()
    if owner is None:
        code_ttl = timedelta(minutes=settings.email_code_ttl_minutes)
        issued = await issue_with_code(conn, code_key, user_id, "setup", email, ttl, code_ttl)
        await enqueue_email(
            conn,
            settings,
            kind="conversion_setup",
            to=email,
            user_id=user_id,
            context={
                "link": settings.link(settings.setup_url, issued.token),
                "ttl_hours": settings.setup_token_ttl_hours,
                "code": issued.code,
                "code_ttl_minutes": settings.email_code_minutes,
            },
        )
    else:
        await enqueue_email(
            conn,
            settings,
            kind="conversion_already_registered",
            to=owner.email,
            user_id=owner.id,
            context={"login_url": f"{settings.public_url}/account/login"},
        )
    await record_event(
        conn, "user.conversion_started", user_id, {"id": str(user_id)}, settings.webhook_url_list
    )
    return row


async def cancel_conversion(conn: AsyncConnection, user_id: UUID, session_version: int) -> Row[Any]:
    """Back to plain anonymous; every outstanding setup link stops working."""
    row = (await conn.execute(_CANCEL, {"id": user_id, "sv": session_version})).first()
    if row is None:
        raise await _refusal(conn, user_id, session_version)
    await end_link_tokens(conn, user_id, "setup")
    return row


async def redeem_setup_link(
    conn: AsyncConnection, settings: Settings, token: str, password_hash: str | None
) -> Row[Any]:
    """Consume the link and register the account in place (same id, same data): with the
    password whose hash the caller made before its transaction (no connection waits on argon2;
    method ``password``), or without one (``email_link``).

    Exactly one concurrent redeemer wins. If another account verified the address meanwhile, this
    raises ``email_taken`` and the caller's transaction rolls back: the guest stays untouched.
    """
    target = await consume_link_token(conn, token, "setup")
    method = "password" if password_hash is not None else "email_link"
    row = await _register(conn, settings, target, password_hash, method)
    if row is None:  # already registered by another way; the link is spent either way
        raise AnonidError("invalid_token")
    return row


async def redeem_setup_code(
    conn: AsyncConnection, settings: Settings, attempt: Attempt, session_version: int
) -> Row[Any]:
    """Consume the code the guest's own session typed and register it in place, with no
    password (method ``email_code``): the same guarantees as ``redeem_setup_link``."""
    target = await consume_code(conn, attempt)
    row = await _register(conn, settings, target, None, "email_code", session_version)
    if row is None:
        raise await _refusal(conn, target.user_id, session_version)
    return row


async def _register(
    conn: AsyncConnection,
    settings: Settings,
    target: LinkTarget,
    password_hash: str | None,
    method: str,
    session_version: int | None = None,
) -> Row[Any] | None:
    """The one promotion to registered, with the address the link or code proved; every other
    link and code of the account ends. ``None`` when the guest is gone or moved on."""
    params = {
        "id": target.user_id,
        "email": target.email,
        "hash": password_hash,
        "sv": session_version,
    }
    try:
        row = (await conn.execute(_PROMOTE, params)).first()
    except sqlalchemy.exc.IntegrityError as exc:
        if EMAIL_UNIQUE_INDEX in str(exc.orig):
            raise AnonidError("email_taken") from None
        raise
    if row is None:
        return None
    await end_link_tokens(conn, target.user_id)
    await record_event(
        conn,
        "user.converted",
        target.user_id,
        {"id": str(target.user_id), "method": method},
        settings.webhook_url_list,
    )
    return row


async def _guest_remains(conn: AsyncConnection, guest_id: UUID, session_version: int) -> bool:
    found = await conn.execute(_GUEST, {"guest": guest_id, "sv": session_version})
    return found.first() is not None


async def merge_guest(
    conn: AsyncConnection,
    settings: Settings,
    guest_id: UUID,
    guest_session_version: int,
    account_id: UUID,
    hooks: Hooks | None = None,
) -> Row[Any] | None:
    """Fold the guest's data into the account and delete the guest; ``None`` if there is no guest
    or the merged document would exceed ``ANONID_DATA_MAX_BYTES``, or when the ``before_merge``
    hook (``hooks``, when on) refuses: then the guest is left alone (not merged, not deleted) and
    the caller's sign-in goes on (CONTRACT §16).

    Objects merge recursively, arrays are unioned (account's items first), scalars keep the
    account's value (``jsonb_merge_guest``, migrations 0001 and 0003), unless the hook answers
    with the document to store instead. The hook is asked inside the caller's transaction with
    both rows locked, so neither can change between its answer and the merge; the wait is
    bounded by ``ANONID_HOOK_TIMEOUT_MS``.
    """
    params: dict[str, Any] = {
        "guest": guest_id,
        "sv": guest_session_version,
        "account": account_id,
        "max": settings.data_max_bytes,
    }
    statement = _MERGE
    if hooks is not None and hooks.before_merge:
        account = (await conn.execute(_LOCK_ACCOUNT, params)).first()
        guest = (await conn.execute(_LOCK_GUEST, params)).first()
        if account is None or guest is None:
            return None
        decision = await before_merge(hooks, settings.data_max_bytes, guest, account)
        if not decision.allow:
            log.info("guest %s not merged into %s: refused by before_merge", guest_id, account_id)
            return None
        if decision.data is not None:
            statement = _MERGE_REPLACED
            params["data"] = orjson.dumps(decision.data).decode()
    row = (await conn.execute(statement, params)).first()
    if row is None:
        if await _guest_remains(conn, guest_id, guest_session_version):
            log.info(
                "guest %s not merged into %s: the merged data would exceed %d bytes",
                guest_id,
                account_id,
                settings.data_max_bytes,
            )
        return None
    await record_event(
        conn,
        "user.merged",
        account_id,
        {"from": str(guest_id), "into": str(account_id)},
        settings.webhook_url_list,
    )
    return row
