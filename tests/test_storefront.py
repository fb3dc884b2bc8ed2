"""The demo storefront reads anonid's access cookie through ``anonid_client`` (offline, against
anonid's own JWKS) and renews an expired one server-side (against a real anonid); its page loads
``@anonid/client`` from its own static files. Every verification rule is proven in
``tests/test_client_verifier.py``; here, that the storefront is wired to them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from storefront.app import Config, create_app

from tests.client_support import CLIENT_JS, JwksServer
from tests.processes import Served, clean_env, free_port
from tests.tokens import claims_for, sign

ISSUER = "https://anonid.test"


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    with JwksServer(free_port(18400, 18450)) as server:
        yield server


@pytest.fixture
async def shop(jwks: JwksServer, client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """The storefront over ASGI; its JWKS server publishes exactly what anonid publishes."""
    jwks.keys = (await client.get("/.well-known/jwks.json")).json()["keys"]
    app = create_app(Config(anonid_url=ISSUER, api_url=jwks.base))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://shop.test"
    ) as c:
        yield c


async def _guest_token(client: httpx.AsyncClient) -> tuple[str, str]:
    r = await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})
    assert r.status_code == 201
    return r.json()["user"]["id"], r.json()["access_token"]


async def _visitor(shop: httpx.AsyncClient, token: str) -> Any:
    r = await shop.get("/api/session", headers={"Cookie": f"anonid_session={token}"})
    assert r.status_code == 200
    return r.json()["visitor"]


async def test_storefront_recognises_a_guest_from_the_cookie_anonid_set(
    shop: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    user_id, token = await _guest_token(client)
    assert await _visitor(shop, token) == {"user_id": user_id, "anonymous": True}
    page = await shop.get("/", headers={"Cookie": f"anonid_session={token}"})
    assert page.status_code == 200
    assert 'data-session="guest"' in page.text
    assert '<span id="who-label">Guest</span>' in page.text
    assert 'id="signup-form"' in page.text
    assert page.headers["cache-control"] == "no-store"


async def test_storefront_shows_signed_in_state_without_sign_up_box_for_a_registered_session(
    shop: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    token = await sign(engine, claims_for("01900000-0000-7000-8000-000000000001", anon=False))
    page = await shop.get("/favourites", headers={"Cookie": f"anonid_session={token}"})
    assert 'data-session="registered"' in page.text
    assert '<span id="who-label">Signed in</span>' in page.text
    assert 'id="signup-form"' not in page.text


async def test_storefront_without_a_cookie_offers_login_and_fetches_no_keys(
    shop: httpx.AsyncClient, jwks: JwksServer
) -> None:
    page = await shop.get("/")
    assert 'data-session="none"' in page.text
    assert f'href="{ISSUER}/account/login"' in page.text
    assert jwks.fetches == 0


async def test_storefront_verifies_every_request_offline_with_one_jwks_fetch(
    shop: httpx.AsyncClient, client: httpx.AsyncClient, jwks: JwksServer
) -> None:
    _, token = await _guest_token(client)
    for _ in range(10):
        assert (await _visitor(shop, token))["anonymous"] is True
    assert jwks.fetches == 1


async def test_storefront_refuses_a_token_the_verifier_refuses(
    shop: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    user = "01900000-0000-7000-8000-000000000002"
    for token in [
        await sign(engine, claims_for(user, aud="someone-else")),
        await sign(engine, claims_for(user, anon="yes")),
        "a.b.c",
    ]:
        assert await _visitor(shop, token) is None
        page = await shop.get("/", headers={"Cookie": f"anonid_session={token}"})
        assert 'data-session="none"' in page.text


async def test_storefront_treats_an_unreachable_jwks_as_signed_out(
    client: httpx.AsyncClient,
) -> None:
    closed = f"http://127.0.0.1:{free_port(18450, 18499)}"
    app = create_app(Config(anonid_url=ISSUER, api_url=closed))
    _, token = await _guest_token(client)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://shop.test"
    ) as shop:
        assert await _visitor(shop, token) is None
        page = await shop.get("/", headers={"Cookie": f"anonid_session={token}"})
        assert page.status_code == 200
        assert 'data-session="none"' in page.text


@pytest.fixture(scope="module")
def anonid(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``anonid serve`` on the test database, for the storefront to renew sessions with."""
    port = free_port(18300, 18350)
    served = Served(
        tmp_path_factory.mktemp("storefront-anonid"),
        clean_env(
            ANONID_DATABASE_URL=database_url,
            ANONID_PUBLIC_URL=f"http://127.0.0.1:{port}",
            ANONID_COOKIE_SECURE="false",
            ANONID_RUN_WORKER="false",
        ),
        port,
    )
    try:
        served.wait_ready()
        yield served.base
    finally:
        served.stop()


async def test_storefront_renews_an_expired_access_cookie_and_passes_the_cookies_on(
    anonid: str, engine: AsyncEngine
) -> None:
    shop_app = create_app(Config(anonid_url=anonid, leeway_seconds=0))
    async with (
        httpx.AsyncClient(base_url=anonid) as browser,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=shop_app), base_url="http://shop.test"
        ) as shop,
    ):
        created = await browser.post("/v1/anonymous")
        user_id = created.json()["user"]["id"]
        access, refresh = browser.cookies["anonid_session"], browser.cookies["anonid_refresh"]
        claims = jwt.decode(access, options={"verify_signature": False})
        now = int(time.time())
        expired = await sign(engine, {**claims, "iat": now - 1000, "exp": now - 100})
        cookie = f"anonid_session={expired}; anonid_refresh={refresh}"

        r = await shop.get("/api/session", headers={"Cookie": cookie})
        assert r.json()["visitor"] == {"user_id": user_id, "anonymous": True}
        passed_on = {c.split("=", 1)[0]: c for c in r.headers.get_list("set-cookie")}
        assert set(passed_on) == {"anonid_session", "anonid_refresh"}
        assert "HttpOnly" in passed_on["anonid_refresh"]
        new_access = passed_on["anonid_session"].split(";", 1)[0].split("=", 1)[1]
        assert await _visitor(shop, new_access) == {"user_id": user_id, "anonymous": True}
        # The old refresh token was rotated: a page rendered with it (within the reuse interval)
        # still renews, in the same session.
        page = await shop.get("/", headers={"Cookie": cookie})
        assert 'data-session="guest"' in page.text

        # A session anonid has ended: the storefront passes on anonid's clearing cookies.
        assert (await browser.post("/v1/logout")).status_code == 204
        r = await shop.get("/api/session", headers={"Cookie": cookie})
        assert r.json()["visitor"] is None
        cleared = r.headers.get_list("set-cookie")
        assert len(cleared) == 2 and all("Max-Age=0" in c for c in cleared)


async def test_storefront_does_not_renew_a_bad_token(anonid: str, engine: AsyncEngine) -> None:
    shop_app = create_app(Config(anonid_url=anonid, leeway_seconds=0))
    async with (
        httpx.AsyncClient(base_url=anonid) as browser,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=shop_app), base_url="http://shop.test"
        ) as shop,
    ):
        await browser.post("/v1/anonymous")
        refresh = browser.cookies["anonid_refresh"]
        r = await shop.get(
            "/api/session", headers={"Cookie": f"anonid_session=a.b.c; anonid_refresh={refresh}"}
        )
        assert r.json()["visitor"] is None and "set-cookie" not in r.headers
        # The refresh token was not spent by the storefront.
        assert (await browser.post("/v1/session/refresh")).status_code == 200


async def test_storefront_serves_the_built_anonid_client_and_its_page_loads_it_as_a_module(
    shop: httpx.AsyncClient,
) -> None:
    page = await shop.get("/")
    assert '<script type="module" src="http://shop.test/static/storefront.js">' in page.text
    script = await shop.get("/static/storefront.js")
    assert 'from "./anonid-client.js"' in script.text
    library = await shop.get("/static/anonid-client.js")
    assert library.status_code == 200
    assert library.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    # The same bytes as the package's build (tests/test_client_js.py rebuilds and compares).
    assert library.content == (CLIENT_JS / "dist" / "index.js").read_bytes()
