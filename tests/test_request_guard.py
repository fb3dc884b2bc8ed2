"""CSRF, media types and malformed input: refused with a clear 4xx, never a 5xx."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from app.platform.middleware import CORS, RequestGuard, vary_origin
from tests.account_support import bare_client, register
from tests.conftest import BASE_URL, AppFactory

FOREIGN = "https://evil.example"


async def _cookie_guest(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/anonymous")).status_code in (200, 201)
    assert client.cookies.get("anonid_session")


async def test_cookie_request_from_a_foreign_origin_is_rejected(client: httpx.AsyncClient) -> None:
    await _cookie_guest(client)
    r = await client.patch("/v1/me/data", json={"a": 1}, headers={"Origin": FOREIGN})
    assert r.status_code == 403 and r.json()["error"] == "csrf_rejected"
    r = await client.post("/v1/logout", headers={"Referer": FOREIGN + "/page"})
    assert r.status_code == 403 and r.json()["error"] == "csrf_rejected"
    assert (await client.get("/v1/me")).json()["data"] == {}


async def test_cookie_request_marked_cross_site_is_rejected(client: httpx.AsyncClient) -> None:
    await _cookie_guest(client)
    r = await client.patch("/v1/me/data", json={"a": 1}, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403 and r.json()["error"] == "csrf_rejected"


async def test_cookie_request_from_an_allowed_origin_passes(client: httpx.AsyncClient) -> None:
    await _cookie_guest(client)
    r = await client.patch(
        "/v1/me/data",
        json={"a": 1},
        headers={"Origin": "https://anonid.test", "Sec-Fetch-Site": "same-origin"},
    )
    assert r.status_code == 200


async def test_configured_origins_are_allowed_and_get_cors_with_credentials(
    app_with: AppFactory,
) -> None:
    _, c = await app_with(allowed_origins="https://shop.example, https://app.example")
    origin = {"Origin": "https://shop.example"}
    r = await c.post("/v1/anonymous", headers=origin)
    assert r.status_code == 201
    assert r.headers["access-control-allow-origin"] == "https://shop.example"
    assert r.headers["access-control-allow-credentials"] == "true"
    r = await c.patch(
        "/v1/me/data", json={"a": 1}, headers={**origin, "Sec-Fetch-Site": "same-site"}
    )
    assert r.status_code == 200
    pre = await c.options(
        "/v1/me/data",
        headers={
            **origin,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert pre.status_code == 200
    r = await c.patch("/v1/me/data", json={"a": 2}, headers={"Origin": FOREIGN})
    assert r.status_code == 403


async def test_bearer_requests_are_not_subject_to_csrf(client: httpx.AsyncClient) -> None:
    token = (await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})).json()[
        "access_token"
    ]
    r = await client.patch(
        "/v1/me/data",
        json={"a": 1},
        headers={
            "Authorization": f"Bearer {token}",
            "Origin": FOREIGN,
            "Sec-Fetch-Site": "cross-site",
        },
    )
    assert r.status_code == 200


async def test_login_from_a_foreign_origin_is_rejected_even_without_cookie(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post(
        "/v1/login",
        json={"email": "a@b.example", "password": "x" * 12},
        headers={"Origin": FOREIGN},
    )
    assert r.status_code == 403 and r.json()["error"] == "csrf_rejected"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""]
)
async def test_unsafe_v1_request_with_non_json_body_is_415(
    client: httpx.AsyncClient, content_type: str
) -> None:
    token = (await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})).json()[
        "access_token"
    ]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    r = await client.put("/v1/me/data", content=b'{"a": 1}', headers=headers)
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"


async def test_merge_patch_type_is_only_for_the_data_patch(client: httpx.AsyncClient) -> None:
    token = (await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})).json()[
        "access_token"
    ]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"}
    assert (await client.put("/v1/me/data", content=b"{}", headers=headers)).status_code == 415
    assert (await client.patch("/v1/me/data", content=b"{}", headers=headers)).status_code == 200


BAD_BODIES = [
    b"{",
    b"not json",
    b'{"a": 1,}',
    b"\xff\xfe\xfd",
    b'{"a": "\xc3\x28"}',
    b'{"a": "\\ud800"}',
    b"[" * 5000 + b"]" * 5000,
    b'{"a": NaN}',
    b"1e999999",
    b"\x00",
]


async def test_json_syntax_errors_are_invalid_json(client: httpx.AsyncClient) -> None:
    token = (await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})).json()[
        "access_token"
    ]
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    for body in (b"{", b"\xff", b'{"a": "\\ud800"}', b'{"a": NaN}'):
        r = await client.patch("/v1/me/data", content=body, headers=auth)
        assert r.status_code == 400 and r.json()["error"] == "invalid_json", body


async def test_oversized_integers_never_give_a_5xx(client: httpx.AsyncClient) -> None:
    token = (await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})).json()[
        "access_token"
    ]
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    r = await client.patch(
        "/v1/me/data", content=b'{"a": 123456789012345678901234567890}', headers=auth
    )
    assert r.status_code in (200, 422)


@pytest.mark.parametrize("body", BAD_BODIES)
async def test_malformed_bodies_never_give_a_5xx(client: httpx.AsyncClient, body: bytes) -> None:
    token = (await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})).json()[
        "access_token"
    ]
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    for method in ("PATCH", "PUT"):
        r = await client.request(method, "/v1/me/data", content=body, headers=auth)
        assert r.status_code < 500, (method, body[:20], r.status_code, r.text)
        if r.status_code >= 400:
            assert r.json()["error"] in ("invalid_json", "invalid_data")
    r = await client.post(
        "/v1/anonymous", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code < 500


async def test_wrong_methods_and_paths_are_json_errors(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = await client.delete("/v1/anonymous")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


async def test_chunked_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    token = (await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})).json()[
        "access_token"
    ]

    async def chunks():
        yield b'{"a": "'
        for _ in range(300):
            yield b"x" * 10_000
        yield b'"}'

    r = await client.put(
        "/v1/me/data",
        content=chunks(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert r.status_code == 413


async def test_openapi_describes_every_endpoint(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    for path, method in [
        ("/v1/anonymous", "post"),
        ("/v1/me", "get"),
        ("/v1/me/data", "patch"),
        ("/v1/me/data", "put"),
        ("/v1/logout", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/.well-known/jwks.json", "get"),
    ]:
        assert method in paths[path], (path, method)
    patch = paths["/v1/me/data"]["patch"]
    assert "application/merge-patch+json" in patch["requestBody"]["content"]
    assert {"401", "413", "415", "422"} <= set(patch["responses"])


CORS_OPTIONS: dict[str, Any] = {
    "allow_origins": ["https://shop.example"],
    "allow_credentials": True,
    "allow_methods": ["GET", "POST", "PUT", "PATCH", "DELETE"],
    "allow_headers": ["content-type", "authorization", "x-anonid-token", "x-request-id"],
    "expose_headers": ["x-request-id"],
    "max_age": 600,
}


async def _answer(
    middleware: Any, request_headers: list[tuple[bytes, bytes]], method: str = "GET"
) -> list[Message]:
    """What ``middleware`` around an app that answers with a few headers (repeated Vary) sends."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/plain"), (b"vary", b"Cookie")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    async def bare(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204})
        await send({"type": "http.response.body", "body": b""})

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    for inner in (app, bare):
        scope = {"type": "http", "method": method, "path": "/", "headers": request_headers}
        await middleware(inner, **CORS_OPTIONS)(scope, receive, send)
    return sent


async def test_cors_answers_as_starlettes_with_or_without_an_origin() -> None:
    cases = [
        [],  # no CORS request: only Vary: Origin
        [(b"origin", b"https://shop.example")],
        [(b"origin", b"https://evil.example")],
        [(b"origin", b"https://shop.example"), (b"access-control-request-method", b"PATCH")],
        [(b"origin", b"https://evil.example"), (b"access-control-request-method", b"PATCH")],
    ]
    for headers in cases:
        for method in ("GET", "OPTIONS"):
            ours = await _answer(CORS, headers, method)
            assert ours == await _answer(CORSMiddleware, headers, method), (headers, method)
    starts = [m for m in await _answer(CORS, []) if m["type"] == "http.response.start"]
    assert [dict(m["headers"]).get(b"vary") for m in starts] == [b"Cookie, Origin", b"Origin"]
    assert vary_origin(
        [(b"vary", b"Cookie"), (b"x", b"1"), (b"vary", b"Accept"), (b"y", b"2")]
    ) == [(b"vary", b"Cookie, Accept, Origin"), (b"x", b"1"), (b"y", b"2")]


async def test_responses_vary_on_origin_and_carry_cors_only_for_allowed_origins(
    app_with: AppFactory,
) -> None:
    _, c = await app_with(allowed_origins="https://shop.example")
    r = await c.post("/v1/anonymous")
    assert r.status_code == 201 and r.headers["vary"] == "Origin"
    assert not [h for h in r.headers if h.startswith("access-control-")]
    r = await c.post("/v1/anonymous", headers={"Origin": "https://shop.example"})
    assert r.headers["vary"] == "Origin"
    assert r.headers["access-control-allow-origin"] == "https://shop.example"
    assert r.headers["access-control-allow-credentials"] == "true"
    # Apps without cookies read the passkey sign-in challenge id (CONTRACT §14).
    assert r.headers["access-control-expose-headers"] == "x-request-id, x-anonid-challenge-id"
    r = await c.get("/healthz", headers={"Origin": FOREIGN})
    assert r.headers["vary"] == "Origin" and "access-control-allow-origin" not in r.headers
    pre = await c.options(
        "/v1/anonymous",
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
    )
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "https://shop.example"
    assert pre.headers["access-control-max-age"] == "600"
    assert "POST" in pre.headers["access-control-allow-methods"]


# Finding 2: the guard reads cookies as the endpoints do.


async def _registered_session(app: FastAPI, engine: AsyncEngine) -> str:
    """A registered account's session token (only a registered session may log out everywhere)."""
    async with bare_client(app) as c:
        await register(c, engine)
        token = c.cookies.get("anonid_session")
    assert token
    return token


async def test_an_unparseable_cookie_before_the_session_does_not_skip_the_csrf_check(
    app: FastAPI, engine: AsyncEngine
) -> None:
    token = await _registered_session(app, engine)
    cookie = f'prefs={{"theme":"dark"}}; anonid_session={token}'
    async with bare_client(app) as attacker_page:
        r = await attacker_page.post(
            "/v1/logout-all", headers={"Cookie": cookie, "Origin": FOREIGN}
        )
        assert r.status_code == 403 and r.json()["error"] == "csrf_rejected"
        r = await attacker_page.post(
            "/v1/logout-all", headers={"Cookie": cookie, "Sec-Fetch-Site": "cross-site"}
        )
        assert r.status_code == 403 and r.json()["error"] == "csrf_rejected"
        me = await attacker_page.get("/v1/me", headers={"Cookie": cookie})
    assert me.status_code == 200  # the session was not ended


async def test_a_session_cookie_in_a_second_cookie_header_does_not_skip_the_csrf_check(
    app: FastAPI, engine: AsyncEngine
) -> None:
    # HTTP/2 may send each cookie as a header of its own; Starlette reads them all.
    token = await _registered_session(app, engine)
    headers = [
        ("cookie", "prefs=dark"),
        ("cookie", f"anonid_session={token}"),
        ("origin", FOREIGN),
    ]
    async with bare_client(app) as attacker_page:
        r = await attacker_page.post("/v1/logout-all", headers=headers)
        assert r.status_code == 403 and r.json()["error"] == "csrf_rejected"
        me = await attacker_page.get("/v1/me", headers={"Cookie": f"anonid_session={token}"})
    assert me.status_code == 200


COOKIE_HEADERS = [
    'prefs={"theme":"dark"}; anonid_session=t1',
    "anonid_session=t1",
    "a=1;anonid_session=t1",
    'anonid_session="t1"',
    "anonid_session=",
    'anonid_session=""',
    "  anonid_session  =  t1  ",
    "anonid_session=t1; anonid_session=",
    "anonid_session=; anonid_session=t1",
    "anonid_session_csrf=x",
    "xanonid_session=t1",
    "anonid_session",
    "=anonid_session",
    "a=\\x; anonid_session=t1",
    "a=b=c; anonid_session=t=1",
    "anonid_session=t1,other=2",
    "anonid_session=\\073",
    "\x00anonid_session=t1",
    "a=\xff; anonid_session=t1",
]


@pytest.mark.parametrize("name", ["anonid_session", "anonid_refresh"])
@pytest.mark.parametrize("raw", COOKIE_HEADERS)
async def test_the_guard_sees_the_session_cookie_exactly_when_the_endpoints_do(
    raw: str, name: str
) -> None:
    # Either cookie counts as carrying the session (CONTRACT §4).
    raw = raw.replace("anonid_session", name)
    guard = RequestGuard(
        _unreachable,
        cookie_names=("anonid_session", "anonid_refresh"),
        allowed_origins=frozenset(),
        data_max=1,
    )
    for headers in (
        [(b"cookie", raw.encode("latin-1"))],
        [(b"cookie", b"x=1"), (b"cookie", raw.encode("latin-1"))],
        [(b"cookie", raw.encode("latin-1")), (b"cookie", f"{name}=".encode())],
    ):
        scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
        endpoint_sees = bool(Request(scope).cookies.get(name))
        assert guard.carries_session(scope) is endpoint_sees, headers


async def _unreachable(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("not called")


async def test_a_basic_authorization_header_does_not_exempt_a_request_from_csrf(
    client: httpx.AsyncClient,
) -> None:
    # Browsers attach cached Basic credentials (a password-protected staging site) to every
    # request, cross-site form posts included; only a Bearer token is the API's own credential.
    r = await client.post(
        "/v1/anonymous",
        headers={
            "Authorization": "Basic dXNlcjpwYXNz",
            "Origin": FOREIGN,
            "Sec-Fetch-Site": "cross-site",
        },
    )
    assert r.status_code == 403 and r.json()["error"] == "csrf_rejected"


# Finding 4: a request whose success would set a session cookie is refused cross-site.


async def _user_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.text("SELECT count(*) FROM users")))


CROSS_SITE_FORM = {
    "Origin": FOREIGN,
    "Sec-Fetch-Site": "cross-site",
    "Content-Type": "application/x-www-form-urlencoded",
}


async def test_a_cross_site_form_cannot_replace_the_visitors_guest(
    app: FastAPI, engine: AsyncEngine
) -> None:
    before = await _user_count(engine)
    async with bare_client(app) as visitor:
        # An auto-submitted form on another site: an empty form body and no cookie (SameSite=Lax).
        r = await visitor.post("/v1/anonymous", content=b"", headers=CROSS_SITE_FORM)
        assert r.status_code == 403 and r.json()["error"] == "csrf_rejected"
        assert "set-cookie" not in r.headers
    assert await _user_count(engine) == before


SESSION_STARTING = [
    "/v1/anonymous",
    "/v1/login",
    "/v1/password-setup",
    "/v1/password-reset/confirm",
    "/account/login",
    "/account/setup",
    "/account/reset",
]


@pytest.mark.parametrize("path", SESSION_STARTING)
@pytest.mark.parametrize(
    "cross_site",
    [
        {"Origin": FOREIGN},
        {"Sec-Fetch-Site": "cross-site"},
        {"Referer": FOREIGN + "/page", "Sec-Fetch-Site": "same-site"},
        {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
    ],
    ids=["origin", "sec-fetch-site", "referer", "sandboxed"],
)
async def test_a_cross_site_request_that_would_start_a_session_is_refused(
    app: FastAPI, engine: AsyncEngine, path: str, cross_site: dict[str, str]
) -> None:
    before = await _user_count(engine)
    async with bare_client(app) as visitor:
        r = await visitor.post(
            path,
            content=b"",
            headers={**cross_site, "Content-Type": "application/x-www-form-urlencoded"},
        )
    assert r.status_code == 403 and r.json()["error"] == "csrf_rejected", r.text
    assert "set-cookie" not in r.headers
    assert await _user_count(engine) == before


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": BASE_URL, "Sec-Fetch-Site": "same-origin"},
        {"Origin": BASE_URL},
        {"Referer": BASE_URL + "/account/login"},
        {"Sec-Fetch-Site": "none"},
        {"Sec-Fetch-Site": "same-origin"},
    ],
    ids=["no-headers", "same-origin", "origin-only", "referer", "typed-url", "fetch-metadata"],
)
async def test_same_site_and_headerless_session_starts_still_work(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    r = await client.post("/v1/anonymous", headers=headers)
    assert r.status_code == 201, r.text
    assert "anonid_session=" in r.headers["set-cookie"]


async def test_a_bearer_session_may_start_from_any_site(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})
    token = created.json()["access_token"]
    r = await client.post(
        "/v1/anonymous",
        headers={
            "Authorization": f"Bearer {token}",
            "Origin": FOREIGN,
            "Sec-Fetch-Site": "cross-site",
        },
    )
    assert r.status_code == 200 and r.json()["user"]["id"] == created.json()["user"]["id"]


async def test_the_guard_applies_its_path_rules_behind_a_root_path(
    app: FastAPI, engine: AsyncEngine
) -> None:
    # Served under a prefix (uvicorn --root-path), the path includes it; routing strips it.
    before = await _user_count(engine)
    async with bare_client(app, root_path="/auth") as visitor:
        r = await visitor.post("/auth/v1/anonymous", headers=CROSS_SITE_FORM)
        assert r.status_code == 403 and r.json()["error"] == "csrf_rejected"
        assert await _user_count(engine) == before
        r = await visitor.post("/auth/v1/anonymous", headers={"X-Anonid-Token": "bearer"})
        assert r.status_code == 201, r.text
        token = r.json()["access_token"]
        r = await visitor.put(
            "/auth/v1/me/data",
            content=b'{"a": 1}',
            headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
        )
        assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"
