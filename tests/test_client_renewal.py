"""``anonid_client`` renews an expired session server-side, against a real ``anonid serve``:
``SessionVerifier.renew`` itself, the ASGI middleware that does it before the app runs and passes
the cookies on, and the FastAPI dependency (with and without the middleware)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from anonid_client import (
    AnonidMiddleware,
    InvalidSession,
    SessionVerifier,
    Unavailable,
    session_of,
)
from anonid_client.fastapi import AnonidSession
from fastapi import Depends, FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.client_support import PORTS, anonid_serving, new_guest
from tests.processes import free_port
from tests.tokens import sign


@pytest.fixture(scope="module")
def anonid(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with anonid_serving(
        tmp_path_factory.mktemp("client-renewal"), database_url, ANONID_RUN_WORKER="false"
    ) as served:
        yield served.base


async def expired_copy(engine: AsyncEngine, access: str) -> str:
    """The same access token (anonid's key, same user and session), expired a minute ago."""
    claims = jwt.decode(access, options={"verify_signature": False})
    now = int(time.time())
    return await sign(engine, {**claims, "iat": now - 1000, "exp": now - 60})


def cookie(**values: str) -> dict[str, str]:
    """A ``Cookie`` request header."""
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in values.items())}


def names(set_cookies: list[str]) -> set[str]:
    return {c.split("=", 1)[0] for c in set_cookies}


async def test_renew_rotates_the_pair_and_gives_the_cookies_to_pass_on(anonid: str) -> None:
    user_id, cookies = new_guest(anonid)
    verifier = SessionVerifier(anonid)
    renewed = await verifier.renew_async(cookies["anonid_refresh"])
    assert renewed.user["id"] == user_id and renewed.expires_in > 0
    assert renewed.refresh_token != cookies["anonid_refresh"]
    assert names(renewed.set_cookies) == {"anonid_session", "anonid_refresh"}
    assert all("HttpOnly" in c for c in renewed.set_cookies)
    claims = await verifier.verify_async(renewed.access_token)
    old = jwt.decode(cookies["anonid_session"], options={"verify_signature": False})
    assert claims["sub"] == user_id and claims["sid"] == old["sid"]
    # The blocking form, with the new refresh token.
    again = await asyncio.to_thread(verifier.renew, renewed.refresh_token)
    assert again.user["id"] == user_id and again.refresh_token != renewed.refresh_token


async def test_renew_of_an_ended_session_raises_with_the_clearing_cookies(anonid: str) -> None:
    _, cookies = new_guest(anonid)
    logout = httpx.post(f"{anonid}/v1/logout", cookies=cookies)
    assert logout.status_code == 204
    with pytest.raises(InvalidSession) as refused:
        await SessionVerifier(anonid).renew_async(cookies["anonid_refresh"])
    assert not isinstance(refused.value, Unavailable)
    assert names(refused.value.set_cookies) == {"anonid_session", "anonid_refresh"}
    assert all("Max-Age=0" in c for c in refused.value.set_cookies)


async def test_renew_refuses_a_malformed_token_without_asking_anonid(anonid: str) -> None:
    verifier = SessionVerifier(anonid)
    for bad in ["", "a;b", "a b", "x\r\nSet-Cookie: y=z"]:
        with pytest.raises(InvalidSession):
            await verifier.renew_async(bad)


async def test_renew_with_anonid_unreachable_is_unavailable() -> None:
    verifier = SessionVerifier(f"http://127.0.0.1:{free_port(*PORTS)}", timeout=2)
    with pytest.raises(Unavailable):
        await verifier.renew_async("some-token")
    with pytest.raises(Unavailable):
        await asyncio.to_thread(verifier.renew, "some-token")


def shop(verifier: SessionVerifier) -> FastAPI:
    """A backend with the middleware; it reports what it saw, including the Cookie header."""
    app = FastAPI()
    app.add_middleware(AnonidMiddleware, verifier=verifier)

    @app.get("/who")
    async def who(request: Request) -> dict[str, Any]:
        claims = session_of(request.scope)
        return {"claims": claims, "cookies": dict(request.cookies)}

    return app


def asgi_client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop.test")


async def test_middleware_passes_a_fresh_session_through_without_calling_anonid(
    anonid: str,
) -> None:
    user_id, cookies = new_guest(anonid)
    async with asgi_client(shop(SessionVerifier(anonid))) as c:
        r = await c.get("/who", headers=cookie(**cookies))
    assert r.json()["claims"]["sub"] == user_id
    assert "set-cookie" not in r.headers


async def test_middleware_renews_an_expired_access_cookie_and_passes_the_cookies_on(
    anonid: str, engine: AsyncEngine
) -> None:
    user_id, cookies = new_guest(anonid)
    expired = await expired_copy(engine, cookies["anonid_session"])
    verifier = SessionVerifier(anonid, leeway=0)
    async with asgi_client(shop(verifier)) as c:
        r = await c.get(
            "/who",
            headers=cookie(
                anonid_session=expired, anonid_refresh=cookies["anonid_refresh"], theme="dark"
            ),
        )
    seen = r.json()
    assert seen["claims"]["sub"] == user_id
    passed_on = r.headers.get_list("set-cookie")
    assert names(passed_on) == {"anonid_session", "anonid_refresh"}
    # The app saw the renewed cookies in place of the spent ones, and its own cookie kept.
    assert seen["cookies"]["theme"] == "dark"
    assert seen["cookies"]["anonid_refresh"] != cookies["anonid_refresh"]
    new_access = seen["cookies"]["anonid_session"]
    assert new_access != expired and (await verifier.verify_async(new_access))["sub"] == user_id
    assert any(c.startswith(f"anonid_session={new_access};") for c in passed_on)


async def test_middleware_no_access_cookie_but_a_refresh_cookie_renews(anonid: str) -> None:
    user_id, cookies = new_guest(anonid)
    async with asgi_client(shop(SessionVerifier(anonid))) as c:
        r = await c.get("/who", headers=cookie(anonid_refresh=cookies["anonid_refresh"]))
    assert r.json()["claims"]["sub"] == user_id
    assert names(r.headers.get_list("set-cookie")) == {"anonid_session", "anonid_refresh"}


async def test_middleware_never_renews_a_bad_token_so_the_refresh_token_is_not_spent(
    anonid: str,
) -> None:
    _, cookies = new_guest(anonid)
    async with asgi_client(shop(SessionVerifier(anonid))) as c:
        r = await c.get(
            "/who",
            headers=cookie(anonid_session="a.b.c", anonid_refresh=cookies["anonid_refresh"]),
        )
    assert r.json()["claims"] is None and "set-cookie" not in r.headers
    fresh = httpx.post(f"{anonid}/v1/session/refresh", cookies=cookies)
    assert fresh.status_code == 200


async def test_middleware_passes_anonids_clearing_cookies_on_for_an_ended_session(
    anonid: str, engine: AsyncEngine
) -> None:
    _, cookies = new_guest(anonid)
    expired = await expired_copy(engine, cookies["anonid_session"])
    assert httpx.post(f"{anonid}/v1/logout", cookies=cookies).status_code == 204
    async with asgi_client(shop(SessionVerifier(anonid, leeway=0))) as c:
        r = await c.get(
            "/who",
            headers=cookie(anonid_session=expired, anonid_refresh=cookies["anonid_refresh"]),
        )
    assert r.json()["claims"] is None
    cleared = r.headers.get_list("set-cookie")
    assert names(cleared) == {"anonid_session", "anonid_refresh"}
    assert all("Max-Age=0" in c for c in cleared)


async def test_middleware_without_cookies_sees_no_session_and_fetches_nothing(
    anonid: str,
) -> None:
    verifier = SessionVerifier(anonid)
    async with asgi_client(shop(verifier)) as c:
        r = await c.get("/who")
    assert r.json()["claims"] is None and verifier.keys.fetches == 0


def dependency_app(verifier: SessionVerifier, *, middleware: bool) -> FastAPI:
    app = FastAPI()
    if middleware:
        app.add_middleware(AnonidMiddleware, verifier=verifier)
    maybe = AnonidSession(verifier)
    required = AnonidSession(verifier, required=True)

    @app.get("/maybe")
    async def maybe_route(claims: dict[str, Any] | None = Depends(maybe)) -> dict[str, Any]:
        return {"sub": None if claims is None else claims["sub"]}

    @app.get("/private")
    async def private_route(claims: dict[str, Any] = Depends(required)) -> dict[str, Any]:
        return {"sub": claims["sub"]}

    return app


@pytest.mark.parametrize("middleware", [False, True], ids=["alone", "with-middleware"])
async def test_fastapi_dependency_gives_the_claims_renews_and_requires(
    anonid: str, engine: AsyncEngine, middleware: bool
) -> None:
    user_id, cookies = new_guest(anonid)
    expired = await expired_copy(engine, cookies["anonid_session"])
    app = dependency_app(SessionVerifier(anonid, leeway=0), middleware=middleware)
    async with asgi_client(app) as c:
        assert (await c.get("/maybe")).json() == {"sub": None}
        refused = await c.get("/private")
        assert refused.status_code == 401
        assert refused.json()["detail"]["error"] == "invalid_session"

        r = await c.get(
            "/private",
            headers=cookie(anonid_session=expired, anonid_refresh=cookies["anonid_refresh"]),
        )
        assert r.status_code == 200 and r.json() == {"sub": user_id}
        # Renewed once, and the cookies reach the browser either way.
        assert names(r.headers.get_list("set-cookie")) == {"anonid_session", "anonid_refresh"}
