"""ALTCHA proof of work before a guest is made (CONTRACT §16), with the ``altcha`` package.

``issue`` makes a challenge (``GET /v1/challenge``): a random salt carrying its expiry, the
SHA-256 of salt and a secret number up to ``ANONID_CHALLENGE_MAX_NUMBER``, and an HMAC of that
hash under the server's ``altcha`` key (``app.server_secrets``: one key in the database, shared by
every process, never shown). No row is written: a challenge proves itself.

``check`` reads ``X-Anonid-Challenge`` (base64 of the solution JSON, as the ALTCHA widget and
libraries make it): missing is ``challenge_required``; malformed, wrong, signed by another key or
expired is ``challenge_failed``. What it returns, the challenge and its expiry, is spent by the
statement that creates the guest (``app.lifecycle.anonymous``: an ``INSERT … ON CONFLICT DO
NOTHING`` into ``spent_challenges`` that the guest's insert depends on), so a solution makes one
guest across every process and a second use is ``challenge_failed``. The table, not Redis: the
database is the one store every process is sure to share (Redis is optional), and spending in the
statement that creates the guest costs no round trip of its own.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import orjson
from altcha.v1 import ChallengeOptions, Payload, create_challenge, hmac_hex, verify_solution

from app.errors import AnonidError

KEY_NAME = "altcha"  # the server secret (app.server_secrets.NAMES)
ALGORITHM = "SHA-256"
# Long enough to solve on a slow phone and act a while later; a client whose solution expired
# fetches another (challenge_failed).
TTL = timedelta(minutes=10)
MAX_HEADER_CHARS = 2048
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Solved:
    """A verified solution: the challenge to spend (32 bytes) and when it expires."""

    challenge: bytes
    expires_at: datetime


def issue(key: bytes, max_number: int, *, ttl: timedelta = TTL) -> dict[str, Any]:
    """A new challenge in the ALTCHA libraries' format."""
    made = create_challenge(
        ChallengeOptions(
            algorithm="SHA-256",
            max_number=max_number,
            salt_length=12,
            hmac_key=key,
            expires=datetime.now(UTC) + ttl,
        )
    )
    return {
        "algorithm": made.algorithm,
        "challenge": made.challenge,
        "maxnumber": made.max_number,
        "salt": made.salt,
        "signature": made.signature,
    }


def check(header: str | None, key: bytes) -> Solved:
    """The solution in ``X-Anonid-Challenge``, verified (not yet spent)."""
    if header is None or not header.strip():
        raise AnonidError("challenge_required")
    payload = _decode(header.strip())
    if payload is None:
        raise AnonidError("challenge_failed", "The challenge solution is not readable.")
    expires = _expiry(payload["salt"])
    if expires is None or expires <= time.time():
        raise AnonidError("challenge_failed", "The challenge has expired; get a new one.")
    ok, _ = verify_solution(Payload.from_dict(payload), key, check_expires=True)  # type: ignore[arg-type]
    # The library compares the signature with ==; compared again in constant time.
    expected = hmac_hex("SHA-256", payload["challenge"].encode(), key)
    if not ok or not hmac.compare_digest(expected, payload["signature"]):
        raise AnonidError("challenge_failed")
    return Solved(bytes.fromhex(payload["challenge"]), datetime.fromtimestamp(expires, UTC))


def _decode(header: str) -> dict[str, Any] | None:
    """The solution as a dict of the expected types, or ``None``."""
    if len(header) > MAX_HEADER_CHARS:
        return None
    try:
        document = orjson.loads(base64.b64decode(header, validate=True))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(document, dict):
        return None
    number = document.get("number")
    strings = ("algorithm", "challenge", "salt", "signature")
    if type(number) is not int or not all(isinstance(document.get(k), str) for k in strings):
        return None
    if document["algorithm"] != ALGORITHM or not _HEX64.fullmatch(document["challenge"]):
        return None
    if not 0 <= number <= 10**9:
        return None
    return {k: document[k] for k in (*strings, "number")}


def _expiry(salt: str) -> float | None:
    """The expiry the salt carries (``…?expires=<epoch seconds>&``); every challenge anonid
    issues has one, so a salt without it was not made here."""
    _, _, query = salt.partition("?")
    values = parse_qs(query).get("expires")
    if not values or len(values) != 1:
        return None
    try:
        return float(int(values[0]))
    except ValueError:
        return None
