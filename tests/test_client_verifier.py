"""``anonid_client.SessionVerifier`` verifies anonid's access tokens offline: ES256 only, a key
anonid publishes, ``iss``, ``aud``, ``exp``, ``sub`` and ``sid``; its key cache follows rotation
without letting made-up ``kid``s turn into requests. Tokens are signed with anonid's real key (the
test database's) or minted by anonid itself, and the keys come over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest
from anonid_client import InvalidSession, SessionExpired, SessionVerifier, Unavailable
from cryptography.hazmat.primitives import serialization
from sqlalchemy.ext.asyncio import AsyncEngine

from app.sessions.keys import new_key_material
from tests.client_support import PORTS, JwksServer
from tests.processes import free_port
from tests.tokens import claims_for, current_key, sign

ISSUER = "https://anonid.test"
USER = "01900000-0000-7000-8000-000000000001"


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    with JwksServer(free_port(*PORTS)) as server:
        yield server


@pytest.fixture
async def published(jwks: JwksServer, client: httpx.AsyncClient) -> AsyncIterator[JwksServer]:
    """The JWKS server publishes exactly what anonid publishes."""
    jwks.keys = (await client.get("/.well-known/jwks.json")).json()["keys"]
    yield jwks


def verifier_for(jwks: JwksServer, **options: Any) -> SessionVerifier:
    return SessionVerifier(jwks.base, issuer=ISSUER, **options)


async def test_verify_returns_the_claims_of_a_token_anonid_issued(
    published: JwksServer, client: httpx.AsyncClient
) -> None:
    r = await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})
    token, user = r.json()["access_token"], r.json()["user"]
    verifier = verifier_for(published)
    claims = await asyncio.to_thread(verifier.verify, token)
    assert claims["sub"] == user["id"] and claims["anon"] is True
    assert claims["iss"] == ISSUER and claims["aud"] == "anonid" and claims["sid"]
    assert await verifier.verify_async(token) == claims


def _b64(document: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


def _foreign_key() -> Any:
    _, pem, _ = new_key_material()
    return serialization.load_pem_private_key(pem.encode(), password=None)


async def _token(engine: AsyncEngine, case: str) -> str:
    past = int(time.time()) - 3600
    if case == "wrong_audience":
        return await sign(engine, claims_for(USER, aud="someone-else"))
    if case == "wrong_issuer":
        return await sign(engine, claims_for(USER, iss="https://evil.test"))
    if case == "expired_and_wrong_audience":
        return await sign(engine, claims_for(USER, aud="other", iat=past - 60, exp=past))
    if case == "foreign_key_same_kid":
        kid, _ = await current_key(engine)
        return jwt.encode(claims_for(USER), _foreign_key(), algorithm="ES256", headers={"kid": kid})
    if case in ("no_sub", "no_sid", "no_exp"):
        claims = claims_for(USER)
        del claims[case.removeprefix("no_")]
        return await sign(engine, claims)
    if case == "numeric_sub":
        return await sign(engine, claims_for(USER, sub=42))
    if case == "alg_none":
        kid, _ = await current_key(engine)
        return jwt.encode(claims_for(USER), None, algorithm="none", headers={"kid": kid})
    if case == "hs256_with_public_key":
        # The old confusion attack: HMAC keyed with the published public key.
        kid, key = await current_key(engine)
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = _b64({"alg": "HS256", "typ": "JWT", "kid": kid})
        signed = f"{header}.{_b64(claims_for(USER))}"
        mac = hmac.new(public, signed.encode(), hashlib.sha256).digest()
        return f"{signed}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    if case == "no_kid":
        _, key = await current_key(engine)
        return jwt.encode(claims_for(USER), key, algorithm="ES256")
    raise AssertionError(case)


REFUSED = [
    "wrong_audience",
    "wrong_issuer",
    "expired_and_wrong_audience",
    "foreign_key_same_kid",
    "no_sub",
    "no_sid",
    "no_exp",
    "numeric_sub",
    "alg_none",
    "hs256_with_public_key",
    "no_kid",
]


@pytest.mark.parametrize("case", REFUSED)
async def test_verify_refuses_a_token_that_fails_any_check_and_never_calls_it_expired(
    published: JwksServer, engine: AsyncEngine, case: str
) -> None:
    token = await _token(engine, case)
    verifier = verifier_for(published)
    with pytest.raises(InvalidSession) as refused:
        await verifier.verify_async(token)
    # Only a token valid but for its age may be renewed.
    assert not isinstance(refused.value, SessionExpired)
    with pytest.raises(InvalidSession) as refused:
        await asyncio.to_thread(verifier.verify, token)
    assert not isinstance(refused.value, SessionExpired)


async def test_verify_raises_session_expired_for_an_expired_but_otherwise_valid_token(
    published: JwksServer, engine: AsyncEngine
) -> None:
    now = int(time.time())
    expired = await sign(engine, claims_for(USER, iat=now - 120, exp=now - 60))
    with pytest.raises(SessionExpired):
        await verifier_for(published, leeway=0).verify_async(expired)
    # Clock skew: within the leeway it still verifies.
    assert (await verifier_for(published, leeway=120).verify_async(expired))["sub"] == USER


async def test_verify_accepts_a_token_issued_a_moment_in_the_verifiers_future(
    published: JwksServer, engine: AsyncEngine
) -> None:
    """anonid's clock may run a little ahead of this backend's: ``iat`` gets the leeway too."""
    ahead = int(time.time()) + 3
    token = await sign(engine, claims_for(USER, iat=ahead, exp=ahead + 900))
    assert (await verifier_for(published).verify_async(token))["sub"] == USER


@pytest.mark.parametrize("junk", ["", "x", "a.b.c", "eyJhbGciOiJFUzI1NiJ9.e30.", "%FF%FE"])
async def test_verify_refuses_garbage_without_fetching_keys(jwks: JwksServer, junk: str) -> None:
    verifier = verifier_for(jwks)
    with pytest.raises(InvalidSession):
        await verifier.verify_async(junk)
    assert jwks.fetches == 0


async def test_keys_are_fetched_once_for_many_verifications_sync_and_async(
    published: JwksServer, engine: AsyncEngine
) -> None:
    token = await sign(engine, claims_for(USER, iss=ISSUER))
    verifier = verifier_for(published)
    await asyncio.gather(*(verifier.verify_async(token) for _ in range(10)))
    for _ in range(5):
        await asyncio.to_thread(verifier.verify, token)
    assert published.fetches == 1


async def test_a_rotated_key_is_picked_up_but_made_up_kids_fetch_at_most_every_30_seconds(
    published: JwksServer, engine: AsyncEngine
) -> None:
    verifier = verifier_for(published)
    await verifier.verify_async(await sign(engine, claims_for(USER)))
    assert published.fetches == 1

    kid, pem, public_jwk = new_key_material()
    published.keys = [public_jwk, *published.keys]
    private = serialization.load_pem_private_key(pem.encode(), password=None)
    rotated = jwt.encode(claims_for(USER), private, algorithm="ES256", headers={"kid": kid})
    assert (await verifier.verify_async(rotated))["sub"] == USER
    assert published.fetches == 2

    for n in range(5):
        made_up = jwt.encode(
            claims_for(USER), private, algorithm="ES256", headers={"kid": f"nope{n}"}
        )
        with pytest.raises(InvalidSession):
            await verifier.verify_async(made_up)
        with pytest.raises(InvalidSession):
            await asyncio.to_thread(verifier.verify, made_up)
    assert published.fetches == 2

    # Once the interval has passed, an unknown kid may fetch again (shortened here).
    verifier.keys.retry_seconds = 0.2
    await asyncio.sleep(0.3)
    with pytest.raises(InvalidSession):
        await verifier.verify_async(made_up)
    assert published.fetches == 3


async def test_the_key_set_is_fetched_again_once_it_is_older_than_its_lifetime(
    published: JwksServer, engine: AsyncEngine
) -> None:
    verifier = verifier_for(published)
    verifier.keys.max_age = 0.2
    verifier.keys.retry_seconds = 0
    token = await sign(engine, claims_for(USER))
    await verifier.verify_async(token)
    await asyncio.sleep(0.3)
    await verifier.verify_async(token)
    assert published.fetches == 2


async def test_a_key_anonid_no_longer_publishes_stops_verifying_once_the_set_is_renewed(
    published: JwksServer, engine: AsyncEngine
) -> None:
    verifier = verifier_for(published)
    token = await sign(engine, claims_for(USER))
    await verifier.verify_async(token)
    published.keys = [new_key_material()[2]]
    verifier.keys.max_age = 0
    verifier.keys.retry_seconds = 0
    with pytest.raises(InvalidSession):
        await verifier.verify_async(token)


async def test_unreachable_keys_are_unavailable_and_not_asked_again_at_once(
    engine: AsyncEngine,
) -> None:
    closed = f"http://127.0.0.1:{free_port(*PORTS)}"
    verifier = SessionVerifier(closed, issuer=ISSUER, timeout=2)
    token = await sign(engine, claims_for(USER))
    for _ in range(3):
        with pytest.raises(Unavailable):
            await verifier.verify_async(token)
    with pytest.raises(Unavailable):
        await asyncio.to_thread(verifier.verify, token)
    assert verifier.keys.fetches == 1


def test_only_http_base_urls_are_accepted_and_the_issuer_defaults_to_it() -> None:
    with pytest.raises(ValueError):
        SessionVerifier("file:///etc/passwd")
    verifier = SessionVerifier("https://id.example.com/")
    assert verifier.issuer == "https://id.example.com"
    assert verifier.keys.url == "https://id.example.com/.well-known/jwks.json"
    assert verifier.audience == "anonid"
