"""Forged, altered, expired or revoked session tokens are refused with 401 invalid_session."""

from __future__ import annotations

import base64
import json
import time

import httpx
import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.tokens import claims_for, current_key, sid_of, sign


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64json(obj: dict) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


async def _guest(client: httpx.AsyncClient) -> tuple[str, str]:
    body = (await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})).json()
    return body["user"]["id"], body["access_token"]


async def _me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})


def _assert_refused(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_session"


async def test_genuine_token_is_accepted(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    user_id, token = await _guest(client)
    sid = sid_of(token)
    assert (await _me(client, token)).status_code == 200
    # A token the test signs itself with the real key is accepted too: the helpers are sound.
    assert (await _me(client, await sign(engine, claims_for(user_id, sid=sid)))).status_code == 200


async def test_alg_none_is_refused(client: httpx.AsyncClient) -> None:
    user_id, token = await _guest(client)
    sid = sid_of(token)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    forged = ".".join(
        [_b64json({**header, "alg": "none"}), _b64json(claims_for(user_id, sid=sid)), ""]
    )
    _assert_refused(await _me(client, forged))


async def test_tampered_payload_is_refused(client: httpx.AsyncClient) -> None:
    _, token = await _guest(client)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["anon"] = False
    _assert_refused(await _me(client, f"{header}.{_b64json(claims)}.{signature}"))


async def test_foreign_key_with_the_real_kid_is_refused(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    user_id, token = await _guest(client)
    sid = sid_of(token)
    kid, _ = await current_key(engine)
    foreign = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(
        claims_for(user_id, sid=sid), foreign, algorithm="ES256", headers={"kid": kid}
    )
    _assert_refused(await _me(client, forged))


async def test_hs256_keyed_with_the_public_key_is_refused(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    user_id, token = await _guest(client)
    sid = sid_of(token)
    kid, private = await current_key(engine)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{_b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{_b64json(claims_for(user_id, sid=sid))}"
    mac = hmac.HMAC(public_pem, hashes.SHA256())
    mac.update(signing_input.encode())
    _assert_refused(await _me(client, f"{signing_input}.{_b64(mac.finalize())}"))


async def test_embedded_jwk_header_is_ignored(client: httpx.AsyncClient) -> None:
    user_id, token = await _guest(client)
    sid = sid_of(token)
    attacker = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(attacker.public_key()))
    forged = jwt.encode(
        claims_for(user_id, sid=sid), attacker, algorithm="ES256", headers={"jwk": jwk}
    )
    _assert_refused(await _me(client, forged))
    forged_kid = jwt.encode(
        claims_for(user_id, sid=sid),
        attacker,
        algorithm="ES256",
        headers={"jwk": jwk, "kid": "attacker"},
    )
    _assert_refused(await _me(client, forged_kid))


def _hand_signed(private: ec.EllipticCurvePrivateKey, header: dict, claims: dict) -> str:
    signing_input = f"{_b64json(header)}.{_b64json(claims)}"
    r, s = decode_dss_signature(private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


async def test_hand_signed_token_with_the_real_kid_is_accepted(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Control for the hostile-kid cases below: the hand signing itself is sound."""
    user_id, token = await _guest(client)
    sid = sid_of(token)
    kid, private = await current_key(engine)
    token = _hand_signed(
        private, {"alg": "ES256", "typ": "JWT", "kid": kid}, claims_for(user_id, sid=sid)
    )
    assert (await _me(client, token)).status_code == 200


@pytest.mark.parametrize(
    "kid",
    ["../../etc/passwd", "' OR 1=1 --", "x" * 5000, 42, None, {"a": 1}, ["k"], "", "\u0000"],
)
async def test_hostile_kid_values_are_refused(
    client: httpx.AsyncClient, engine: AsyncEngine, kid: object
) -> None:
    user_id, token = await _guest(client)
    sid = sid_of(token)
    _, private = await current_key(engine)
    # Signed by hand with the real key: PyJWT itself refuses to encode non-string kids.
    token = _hand_signed(
        private, {"alg": "ES256", "typ": "JWT", "kid": kid}, claims_for(user_id, sid=sid)
    )
    _assert_refused(await _me(client, token))


async def test_expired_token_is_refused_as_expired(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    user_id, token = await _guest(client)
    sid = sid_of(token)
    now = int(time.time())
    expired = await sign(engine, claims_for(user_id, sid=sid, iat=now - 7200, exp=now - 60))
    r = await _me(client, expired)
    # Otherwise valid: the client should refresh (CONTRACT §4), not start over.
    assert r.status_code == 401 and r.json()["error"] == "session_expired"
    # Expired and altered is simply invalid: expiry is told apart only for a genuine token.
    header, payload, signature = expired.split(".")
    _assert_refused(await _me(client, f"{header}.{payload}.{signature[::-1]}"))
    foreign = jwt.encode(
        claims_for(user_id, sid=sid, iat=now - 7200, exp=now - 60),
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": (await current_key(engine))[0]},
    )
    _assert_refused(await _me(client, foreign))
    wrong_audience = await sign(
        engine, claims_for(user_id, sid=sid, aud="other", iat=now - 7200, exp=now - 60)
    )
    _assert_refused(await _me(client, wrong_audience))


@pytest.mark.parametrize(
    "override",
    [{"aud": "someone-else"}, {"iss": "https://evil.test"}, {"sub": "not-a-uuid"}, {"sv": "1"}],
)
async def test_wrong_audience_issuer_or_claim_types_are_refused(
    client: httpx.AsyncClient, engine: AsyncEngine, override: dict
) -> None:
    user_id, token = await _guest(client)
    sid = sid_of(token)
    _assert_refused(await _me(client, await sign(engine, claims_for(user_id, sid=sid, **override))))


@pytest.mark.parametrize("missing", ["exp", "sid", "sv", "anon", "jti"])
async def test_missing_claims_are_refused(
    client: httpx.AsyncClient, engine: AsyncEngine, missing: str
) -> None:
    user_id, token = await _guest(client)
    sid = sid_of(token)
    claims = claims_for(user_id, sid=sid)
    del claims[missing]
    _assert_refused(await _me(client, await sign(engine, claims)))


async def test_a_token_naming_another_session_or_an_ended_one_is_refused(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    user_id, token = await _guest(client)
    _assert_refused(await _me(client, await sign(engine, claims_for(user_id))))  # unknown sid
    _, other = await _guest(client)
    # A live session, but of another user.
    _assert_refused(await _me(client, await sign(engine, claims_for(user_id, sid=sid_of(other)))))
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE sessions SET ended_at = now() WHERE id = :sid"), {"sid": sid_of(token)}
        )
    _assert_refused(await _me(client, token))


async def test_bumped_session_version_revokes_older_tokens(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    user_id, token = await _guest(client)
    sid = sid_of(token)
    assert (await _me(client, token)).status_code == 200
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE users SET session_version = session_version + 1 WHERE id = :id"),
            {"id": user_id},
        )
    _assert_refused(await _me(client, token))
    fresh = await sign(engine, claims_for(user_id, sid=sid, sv=2))
    assert (await _me(client, fresh)).status_code == 200


async def test_token_of_a_deleted_user_is_refused(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    user_id, token = await _guest(client)
    async with engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM users WHERE id = :id"), {"id": user_id})
    _assert_refused(await _me(client, token))


@pytest.mark.parametrize(
    "value",
    ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer a.b.c", "Bearer ....", "Bearer é"],
)
async def test_garbage_authorization_headers_are_refused(
    client: httpx.AsyncClient, value: str
) -> None:
    r = await client.get("/v1/me", headers={"Authorization": value.encode("utf-8")})
    _assert_refused(r)


async def test_refused_cookie_is_cleared(client: httpx.AsyncClient) -> None:
    client.cookies.set("anonid_session", "not-a-jwt", domain="anonid.test")
    r = await client.get("/v1/me")
    _assert_refused(r)
    set_cookie = r.headers["set-cookie"]
    assert set_cookie.startswith("anonid_session=") and "Max-Age=0" in set_cookie
