"""Email addresses as the service accepts them: one syntax check and ONE normal form.

The normal form (``email_key``) is computed in Python and used everywhere an address is keyed:
rate limits, lookups, uniqueness and storage (``users.email``, ``users.pending_email``,
``link_tokens.email``, outbox addressing). PostgreSQL only ever compares it with ``=``: its
``lower()`` follows the database's collation, so it cannot agree with Python in general
(``İ`` U+0130 is ``i`` to glibc's ``lower()`` and ``i̇`` to Python's), and an address that two
case mappings read differently would be one account to the database and two to the limiter.

- local part: NFC, then Python's ``str.lower()`` (then NFC again; the result is stable);
- domain: its IDNA (UTS 46, non-transitional) A-label form in lower case, so ``bücher.de`` and
  ``xn--bcher-kva.de`` are one domain; ASCII domains are just lower-cased.

Local parts are case-insensitive in practice (and in Supabase, which lower-cases them too);
treating ``Alice@`` and ``alice@`` as two people would make a confusable second account.
"""

from __future__ import annotations

import re
import unicodedata

import idna

from app.errors import AnonidError

MAX_EMAIL_LENGTH = 254  # octets of the normal form (RFC 5321 path limit less the brackets)
MAX_LOCAL_LENGTH = 64  # octets (RFC 5321; RFC 6531 counts UTF-8 octets)
# No stored address is longer than this once normalised; longer input is never normalised, so
# no request buys more than a bounded amount of IDNA work.
MAX_KEY_INPUT = 4 * MAX_EMAIL_LENGTH
TOO_LONG_KEY = "\x00"  # PostgreSQL text cannot hold NUL: matches no stored address

_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+)*"
_LABEL = r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\u0080-\U0010ffff-]{0,61}[A-Za-z0-9\u0080-\U0010ffff])?"
_EMAIL = re.compile(rf"^(?P<local>{_LOCAL})@(?P<domain>(?:{_LABEL}\.)+{_LABEL})$")
_ASCII_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

# The unique index on users.email (migration 0005); a violation of it is ``email_taken``.
EMAIL_UNIQUE_INDEX = "uq_users_email"

SMTPUTF8_UNAVAILABLE = (
    "This service's mail server cannot deliver to addresses with non-ASCII characters before "
    "the @ (it does not offer SMTPUTF8); please use another address."
)
SMTPUTF8_UNKNOWN = (
    "This service cannot tell yet whether its mail server delivers to addresses with non-ASCII "
    "characters before the @ (SMTPUTF8); please use another address or try again in a minute."
)


def email_key(raw: str) -> str:
    """THE normal form of an address: the one key for limits, lookups, uniqueness and storage.

    Total and idempotent: input that is no acceptable address still gets a deterministic key
    (it matches no account, since every stored address is a normal form of an accepted one).
    """
    text = raw.strip()
    if len(text) > MAX_KEY_INPUT:
        return TOO_LONG_KEY
    local, at, domain = unicodedata.normalize("NFC", text).rpartition("@")
    if not at:
        return _fold(domain)
    return f"{_fold(local)}@{_domain_key(domain)}"


def parse_email(raw: str) -> str:
    """The normal form of a plausible, deliverable-looking address, or ``invalid_email``.

    No CR/LF or other control can pass; the domain must be a valid (internationalised) domain
    name. Whether the local part needs SMTPUTF8 is the caller's question (``needs_smtputf8``).
    """
    candidate = raw.strip()
    if len(candidate) > MAX_KEY_INPUT or _EMAIL.fullmatch(candidate) is None:
        raise AnonidError("invalid_email")
    if _has_unprintable(candidate):
        raise AnonidError("invalid_email")
    normal = email_key(candidate)
    local, _, domain = normal.rpartition("@")
    if len(local.encode()) > MAX_LOCAL_LENGTH or len(normal.encode()) > MAX_EMAIL_LENGTH:
        raise AnonidError("invalid_email")
    if not _valid_ascii_domain(domain):
        raise AnonidError(
            "invalid_email", "The part after the @ is not a valid (internationalised) domain name."
        )
    return normal


def needs_smtputf8(normal: str) -> bool:
    """Whether mail to this normal form needs SMTPUTF8 (a non-ASCII local part; domains are
    ASCII A-labels once normalised)."""
    return not normal.isascii()


def _fold(text: str) -> str:
    # lower() can leave a composable sequence (U+0130 -> i + U+0307); NFC after it is stable
    # (checked for every code point, alone and before a combining mark, in the tests).
    return unicodedata.normalize("NFC", text.lower())


def _domain_key(domain: str) -> str:
    if domain.isascii():
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True, std3_rules=True).decode("ascii")
    except UnicodeError:  # idna.IDNAError is one: not a domain IDNA accepts; keyed, never valid
        return _fold(domain)


def _valid_ascii_domain(domain: str) -> bool:
    labels = domain.split(".")
    if not domain.isascii() or len(labels) < 2:
        return False
    if not all(_ASCII_LABEL.fullmatch(label) for label in labels):
        return False
    try:
        for label in labels:
            if label.startswith("xn--"):
                idna.decode(label)  # an A-label must decode to a valid U-label
    except UnicodeError:
        return False
    return True


def _has_unprintable(value: str) -> bool:
    # Controls, format characters, surrogates and separators (U+2028 …) never belong in an address.
    return any(ord(ch) > 127 and unicodedata.category(ch)[0] in "CZ" for ch in value)
