"""Passwords: the policy of CONTRACT §5 and argon2id hashing off the event loop.

Hashing and verifying run in a small dedicated thread pool, so a burst of logins never stalls
other requests and never holds more than a few argon2 buffers in memory at once.
"""

from __future__ import annotations

import asyncio
import os
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from app.errors import N_, AnonidError

MAX_PASSWORD_LENGTH = 128
COMMON_PASSWORDS = Path(__file__).resolve().parent.parent / "data" / "common-passwords.txt"

# OWASP's argon2id baseline (m=19 MiB, t=2, p=1). Raising any of these makes ``needs_rehash``
# true for older hashes, which are then upgraded at the next successful login.
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

_pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="argon2")


def normalise(password: str) -> str:
    """NFKC, so the same password typed on different keyboards is the same password."""
    return unicodedata.normalize("NFKC", password)


@cache
def common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS.read_text("utf-8").splitlines()
    return frozenset(line for line in lines if line and not line.startswith("# "))


def check_policy(password: str, min_length: int) -> str:
    """The normalised password, or ``weak_password`` with the reason. No composition rules."""
    normal = normalise(password)
    if len(normal) < min_length:
        raise AnonidError(
            "weak_password",
            N_("The password is too short: use at least %(min)d characters."),
            params={"min": min_length},
        )
    if len(normal) > MAX_PASSWORD_LENGTH:
        raise AnonidError(
            "weak_password",
            N_("The password is too long: use at most %(max)d characters."),
            params={"max": MAX_PASSWORD_LENGTH},
        )
    if normal.lower() in common_passwords():
        raise AnonidError(
            "weak_password",
            N_("This password is one of the most commonly used ones; choose a less common one."),
        )
    return normal


async def hash_password(normal: str) -> str:
    """argon2id hash of an already-normalised password, computed in the worker pool."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool, HASHER.hash, normal)


def _verify(stored: str, candidate: str) -> bool:
    try:
        return HASHER.verify(stored, candidate)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str, password: str) -> bool:
    """Whether ``password`` (normalised here) matches ``stored``; never raises for a mismatch."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool, _verify, stored, normalise(password))


def needs_rehash(stored: str) -> bool:
    try:
        return HASHER.check_needs_rehash(stored)
    except (InvalidHashError, ValueError):
        return True


@cache
def _dummy_hash() -> str:
    return HASHER.hash("not a password anyone has: " + os.urandom(16).hex())


async def burn_verify(password: str) -> None:
    """Spend one verification, as for a real account, so unknown emails cost the same time."""
    loop = asyncio.get_running_loop()
    dummy = await loop.run_in_executor(_pool, _dummy_hash)
    await loop.run_in_executor(_pool, _verify, dummy, normalise(password))
