"""The per-process cache of verified session tokens never accepts what a full check would refuse."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import AnonidError
from app.sessions import access
from app.sessions.access import AccessTokens, Claims
from app.sessions.keys import KeyRing
from tests.conftest import make_settings
from tests.tokens import claims_for, sign


@pytest.fixture
async def keys(database_url: str, engine: AsyncEngine, app: object) -> AsyncIterator[AccessTokens]:
    # `app` has started once, so a signing key exists in the database.
    ring = KeyRing(make_settings(database_url), engine)
    await ring.load()
    yield AccessTokens(ring)


def _issue(keys: AccessTokens) -> str:
    return keys.issue(uuid.uuid4(), True, 1, uuid.uuid4()).token


async def test_remembered_token_is_answered_without_verifying_again(keys: AccessTokens) -> None:
    token = _issue(keys)
    first = await keys.verify(token)
    assert token in keys._verified
    assert await keys.verify(token) is first


async def test_remembered_token_is_refused_once_expired(
    keys: AccessTokens, engine: AsyncEngine
) -> None:
    now = int(time.time())
    user_id = str(uuid.uuid4())
    token = await sign(engine, claims_for(user_id, iat=now - 100, exp=now - 10))
    # Remembered from when it was still valid: the cache alone must not let it through.
    kid = next(iter(keys.ring.keys))
    claims = Claims(
        sub=uuid.UUID(user_id),
        sid=uuid.uuid4(),
        anon=True,
        sv=1,
        iat=now - 100,
        exp=now - 10,
        jti="j",
    )
    keys._verified[token] = (claims, kid)
    with pytest.raises(AnonidError) as refused:
        await keys.verify(token)
    assert refused.value.code == "session_expired"


async def test_remembered_token_is_refused_once_its_key_is_gone(keys: AccessTokens) -> None:
    token = _issue(keys)
    await keys.verify(token)
    # As after a reload in which the key no longer exists (loaded just now, so no refresh).
    keys.ring.keys = {}
    keys.ring.loaded_at = time.monotonic()
    with pytest.raises(AnonidError):
        await keys.verify(token)


async def test_a_changed_copy_of_a_remembered_token_is_verified_on_its_own(
    keys: AccessTokens,
) -> None:
    token = _issue(keys)
    await keys.verify(token)
    head, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(AnonidError):
        await keys.verify(f"{head}.{payload}.{flipped}")


async def test_cache_of_verified_tokens_is_bounded_and_drops_the_oldest(
    keys: AccessTokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(access, "VERIFIED_CACHE_SIZE", 3)
    tokens = [_issue(keys) for _ in range(5)]
    for token in tokens:
        await keys.verify(token)
    assert list(keys._verified) == tokens[2:]


@pytest.mark.parametrize(
    "token",
    ["", ".", "x" * 2000 + ".a.b", "!!!!.a.b", "bnVsbA.a.b", "W10.a.b", "e30.a.b"],
    ids=["empty", "dots", "huge-header", "not-base64", "json-null", "json-array", "no-kid"],
)
async def test_malformed_headers_are_invalid_sessions(keys: AccessTokens, token: str) -> None:
    with pytest.raises(AnonidError) as refused:
        await keys.verify(token)
    assert refused.value.code == "invalid_session"
