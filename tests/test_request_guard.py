"""CSRF, media types and malformed input: refused with a clear 4xx, never a 5xx."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Message, Receive, Scope, Send

from app.middleware import CORS, vary_origin
from tests.conftest import AppFactory

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
    assert r.headers["access-control-expose-headers"] == "x-request-id"
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
