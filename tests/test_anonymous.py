"""Anonymous accounts: creation, the returning visitor, the cookie and the token."""

from __future__ import annotations

import base64
import json
import re
import uuid

import httpx
import jwt
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import AppFactory


def _segments(token: str) -> tuple[dict, dict]:
    def decode(part: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))

    header, payload, _ = token.split(".")
    return decode(header), decode(payload)


def _cookie_attrs(set_cookie: str) -> dict[str, str]:
    parts = [p.strip() for p in set_cookie.split(";")]
    attrs = {}
    for p in parts[1:]:
        k, _, v = p.partition("=")
        attrs[k.lower()] = v
    return attrs


async def test_new_visitor_gets_anonymous_account_with_cookie_and_no_token_in_body(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post("/v1/anonymous")
    assert r.status_code == 201
    body = r.json()
    assert "access_token" not in body and "token" not in r.text.lower().replace("_", "")
    user = body["user"]
    assert user["state"] == "anonymous" and user["is_anonymous"] is True
    assert user["email"] is None and re.fullmatch(r"guest-[0-9a-f]{20}", user["username"])
    # expires_in is the access token's; both cookies live as long as the guest's session.
    assert body["expires_in"] == 15 * 60
    assert "refresh_token" not in body
    assert r.headers["cache-control"] == "no-store"

    access, refresh = r.headers.get_list("set-cookie")
    assert access.startswith("anonid_session=") and refresh.startswith("anonid_refresh=")
    for set_cookie in (access, refresh):
        attrs = _cookie_attrs(set_cookie)
        assert "httponly" in attrs and "secure" in attrs
        assert attrs["samesite"] == "Lax" and attrs["path"] == "/"
        assert attrs["max-age"] == str(30 * 86400)


async def test_ids_are_uuidv7(client: httpx.AsyncClient) -> None:
    ids = [uuid.UUID((await client.post("/v1/anonymous")).json()["user"]["id"]) for _ in range(3)]
    client.cookies.clear()
    assert all(i.version == 7 for i in ids)


async def test_jwt_header_and_claims(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})
    assert r.status_code == 201
    assert "set-cookie" not in r.headers
    body = r.json()
    assert body["token_type"] == "Bearer"
    header, claims = _segments(body["access_token"])
    assert header["alg"] == "ES256" and header["typ"] == "JWT" and header["kid"]
    assert set(claims) >= {"iss", "aud", "sub", "iat", "exp", "jti", "anon", "sv", "sid"}
    assert claims["iss"] == "https://anonid.test" and claims["aud"] == "anonid"
    assert claims["sub"] == body["user"]["id"] and claims["anon"] is True
    assert uuid.UUID(claims["sid"]).version == 7
    assert claims["exp"] - claims["iat"] == 15 * 60 == body["expires_in"]
    assert len(body["refresh_token"]) >= 43
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert header["kid"] in {k["kid"] for k in jwks["keys"]}
    assert all("d" not in k for k in jwks["keys"])  # never the private part
    # Any JOSE library verifies it with the published key (raw r||s, RFC 7518 §3.4).
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    verified = jwt.decode(
        body["access_token"],
        jwt.PyJWK(jwk).key,
        algorithms=["ES256"],
        audience="anonid",
        issuer="https://anonid.test",
    )
    assert verified == claims


async def test_returning_visitor_with_cookie_gets_same_account_and_no_new_row(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    first = await client.post("/v1/anonymous")
    user_id = first.json()["user"]["id"]
    async with engine.connect() as conn:
        before = await conn.scalar(sa.text("SELECT count(*) FROM users"))
    again = await client.post("/v1/anonymous")
    assert again.status_code == 200
    assert again.json()["user"]["id"] == user_id
    async with engine.connect() as conn:
        after = await conn.scalar(sa.text("SELECT count(*) FROM users"))
    assert after == before
    me = await client.get("/v1/me")
    assert me.status_code == 200 and me.json()["id"] == user_id


async def test_bearer_token_is_accepted(client: httpx.AsyncClient) -> None:
    token = (await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})).json()[
        "access_token"
    ]
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.headers["cache-control"] == "no-store"


async def test_cookie_secure_can_be_turned_off(app_with: AppFactory) -> None:
    _, c = await app_with(cookie_secure=False, cookie_domain="example.test")
    r = await c.post("/v1/anonymous")
    for set_cookie in r.headers.get_list("set-cookie"):
        attrs = _cookie_attrs(set_cookie)
        assert "secure" not in attrs and attrs["domain"] == "example.test"


def test_guest_usernames_lead_with_their_minute_so_the_username_index_is_appended_to() -> None:
    from app.platform.ids import guest_username

    at = 1_800_000_000.0
    same_minute = {guest_username(at + s) for s in (0, 10, 59) for _ in range(50)}
    later = guest_username(at + 60)
    assert len(same_minute) == 150  # the random part still tells them apart
    assert len({name[:10] for name in same_minute}) == 1  # "guest-" + the minute
    assert all(re.fullmatch(r"guest-[0-9a-f]{20}", name) for name in [*same_minute, later])
    assert later[:10] > max(same_minute)[:10]  # the next minute sorts after this one
