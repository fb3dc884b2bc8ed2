"""The three synchronous hooks (CONTRACT §16) and what each answer, or failure, decides.

    hook                 asked with                       a refusal             a failure, deny / allow
    before_user_created  kind, ip, user_agent             403 hook_denied,      403 hook_denied /
                                                          no row                  created
    custom_claims        the user (U)                     (none)                503 hook_unavailable /
                                                                                  no ``app`` claim
    before_merge         the guest and the account (U)    the sign-in succeeds, guest left alone /
                                                          guest left alone        the usual merge

An answer that breaks the rules (claims naming one of §4's claims, or not an object; a merged
``data`` that is no profile document or exceeds ``ANONID_DATA_MAX_BYTES``) counts as a failure,
except that an oversized or invalid ``data`` refuses the merge whatever the policy: it is an
answer, just one that cannot be stored. Each failure is logged with its reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from app.errors import AnonidError
from app.hooks.client import HookFailed, Hooks
from app.lifecycle.users import user_view

log = logging.getLogger("anonid.hooks")

# CONTRACT §4's claims: an application's claims live under ``app`` and may name none of them.
RESERVED_CLAIMS = frozenset({"iss", "aud", "sub", "iat", "exp", "jti", "anon", "sv", "sid"})
# The access token travels in a cookie (at most 4096 bytes with its name and attributes).
MAX_CLAIMS_BYTES = 1024
MAX_MESSAGE_CHARS = 300


async def before_user_created(
    hooks: Hooks, kind: str, ip: str | None, user_agent: str | None
) -> None:
    """Ask whether an account may be made (``kind``: ``anonymous`` or ``registered``); returns
    when it may, raises ``hook_denied`` when not."""
    data = {"kind": kind, "ip": ip, "user_agent": user_agent}
    try:
        answer = await hooks.call("before_user_created", data)
        allow = answer.get("allow")
        if not isinstance(allow, bool):
            raise HookFailed('the answer has no boolean "allow"')
    except HookFailed as exc:
        log.warning("before_user_created hook failed: %s", exc)
        if hooks.allow_on_failure:
            return
        raise AnonidError(
            "hook_denied", "The application could not be asked whether to create the account."
        ) from None
    if not allow:
        message = answer.get("message")
        text = message[:MAX_MESSAGE_CHARS] if isinstance(message, str) and message else None
        raise AnonidError("hook_denied", text)


async def custom_claims(hooks: Hooks, user: Any) -> dict[str, Any] | None:
    """The application's claims for ``user``'s access token (``None``: no ``app`` claim), or
    ``hook_unavailable`` when the hook failed and the policy is ``deny``."""
    try:
        answer = await hooks.call("custom_claims", {"user": user_view(user)})
        claims = answer.get("claims")
        if not isinstance(claims, dict):
            raise HookFailed('the answer has no "claims" object')
        reserved = RESERVED_CLAIMS.intersection(claims)
        if reserved:
            raise HookFailed(f"the claims name reserved claims: {sorted(reserved)}")
        if len(orjson.dumps(claims)) > MAX_CLAIMS_BYTES:
            raise HookFailed(f"the claims exceed {MAX_CLAIMS_BYTES} bytes as JSON")
    except HookFailed as exc:
        log.warning("custom_claims hook failed: %s", exc)
        if hooks.allow_on_failure:
            return None
        raise AnonidError("hook_unavailable") from None
    return claims


@dataclass(frozen=True, slots=True)
class MergeDecision:
    """Whether to merge, and the document that replaces the merged one (``None``: the usual
    merge)."""

    allow: bool
    data: dict[str, Any] | None = None


async def before_merge(hooks: Hooks, max_bytes: int, guest: Any, account: Any) -> MergeDecision:
    """Ask whether to merge ``guest`` into ``account`` and with what data (held to
    ``max_bytes``)."""
    from app.lifecycle.anonymous import validate_data  # anonymous -> sessions -> hooks

    try:
        answer = await hooks.call(
            "before_merge", {"guest": user_view(guest), "account": user_view(account)}
        )
        allow = answer.get("allow")
        if not isinstance(allow, bool):
            raise HookFailed('the answer has no boolean "allow"')
    except HookFailed as exc:
        log.warning("before_merge hook failed: %s", exc)
        return MergeDecision(hooks.allow_on_failure)
    data = answer.get("data")
    if not allow or data is None:
        return MergeDecision(allow)
    try:
        validate_data(data, patch=False, max_bytes=max_bytes)
    except AnonidError as exc:
        log.warning("before_merge hook's data refused: %s", exc.message)
        return MergeDecision(False)
    return MergeDecision(True, data)
