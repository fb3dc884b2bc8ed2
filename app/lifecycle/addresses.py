"""Email addresses as the service accepts them: one syntax check and one normal form.

Stored addresses keep the local part as typed and lower-case the domain; every comparison is
case-insensitive (``lower(email)``), matching the unique index on ``users``.
"""

from __future__ import annotations

import re
import unicodedata

from app.errors import AnonidError

MAX_EMAIL_LENGTH = 254

_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+)*"
_LABEL = r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\u0080-\U0010ffff-]{0,61}[A-Za-z0-9\u0080-\U0010ffff])?"
_EMAIL = re.compile(rf"^(?P<local>{_LOCAL})@(?P<domain>(?:{_LABEL}\.)+{_LABEL})$")


def parse_email(raw: str) -> str:
    """The normal form of a plausible address, or ``invalid_email``. No CR/LF can pass."""
    candidate = raw.strip()
    match = _EMAIL.fullmatch(candidate) if len(candidate) <= MAX_EMAIL_LENGTH else None
    if match is None or len(match["local"]) > 64 or _has_unprintable(candidate):
        raise AnonidError("invalid_email")
    return f"{match['local']}@{match['domain'].lower()}"


def email_key(raw: str) -> str:
    """The case-insensitive key used for lookups and rate limits (no validation)."""
    return raw.strip().lower()


def _has_unprintable(value: str) -> bool:
    # Controls, format characters, surrogates and separators (U+2028 …) never belong in an address.
    return any(ord(ch) > 127 and unicodedata.category(ch)[0] in "CZ" for ch in value)
