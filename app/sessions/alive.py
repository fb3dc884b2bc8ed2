"""When a session is alive (CONTRACT §4), as SQL every statement that trusts a session shares.

A session is alive while it has not ended, has been refreshed within its idle lifetime
(``ANONID_ANONYMOUS_TTL_DAYS`` for a guest, ``ANONID_SESSION_TTL_DAYS`` for a registered user) and,
for a registered user, is younger than ``ANONID_SESSION_MAX_DAYS``. The lifetimes are read from
``last_used_at`` and ``created_at`` with today's settings, so a changed setting applies to every
live session at once.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from app.settings import Settings


def alive(s: str = "s", u: str = "u") -> str:
    """The condition, for a session aliased ``s`` whose user (joined) is aliased ``u``; it binds
    ``:anon_days``, ``:reg_days`` and ``:max_days`` (``lifetime_params``)."""
    return (
        f"{s}.ended_at IS NULL"
        f" AND {s}.last_used_at > now() - make_interval(days => CASE WHEN {u}.is_anonymous"
        " THEN CAST(:anon_days AS integer) ELSE CAST(:reg_days AS integer) END)"
        f" AND ({u}.is_anonymous OR {s}.created_at > now()"
        " - make_interval(days => CAST(:max_days AS integer)))"
    )


@cache
def _params(anon_days: int, reg_days: int, max_days: int) -> dict[str, Any]:
    return {"anon_days": anon_days, "reg_days": reg_days, "max_days": max_days}


def lifetime_params(settings: Settings) -> dict[str, Any]:
    """The parameters ``alive`` binds (a shared dict: copy it before changing it)."""
    return _params(
        settings.anonymous_ttl_days, settings.session_ttl_days, settings.session_max_days
    )
