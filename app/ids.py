"""Identifiers: UUIDv7 for rows (time-ordered, so indexes stay append-mostly) and guest usernames."""

from __future__ import annotations

import base64
import secrets
from uuid import UUID

from uuid_utils.compat import uuid7


def new_id() -> UUID:
    return uuid7()


def guest_username() -> str:
    # 64 random bits: collisions stay negligible at hundreds of millions of guests.
    return "guest-" + base64.b32encode(secrets.token_bytes(8)).decode().rstrip("=").lower()
