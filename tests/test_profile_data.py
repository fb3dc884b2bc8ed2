"""Profile data: RFC 7396 merge patches applied atomically in PostgreSQL, replace, size limits."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.conftest import AppFactory

MERGE = {"Content-Type": "application/merge-patch+json"}


async def _guest(client: httpx.AsyncClient) -> dict[str, str]:
    token = (await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})).json()[
        "access_token"
    ]
    return {"Authorization": f"Bearer {token}"}


async def _patch(client: httpx.AsyncClient, auth: dict, doc: object) -> httpx.Response:
    return await client.patch("/v1/me/data", json=doc, headers={**auth, **MERGE})


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [
        # The examples of RFC 7396 appendix A that apply to an object document.
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        (
            {"a": {"b": 1, "c": {"d": 2}}},
            {"a": {"c": {"e": 3}}},
            {"a": {"b": 1, "c": {"d": 2, "e": 3}}},
        ),
    ],
)
async def test_merge_patch_follows_rfc_7396(
    client: httpx.AsyncClient, target: dict, patch: dict, result: dict
) -> None:
    auth = await _guest(client)
    put = await client.put("/v1/me/data", json=target, headers=auth)
    assert put.status_code == 200 and put.json() == {"data": target}
    r = await _patch(client, auth, patch)
    assert r.status_code == 200, r.text
    assert r.json() == {"data": result}
    assert r.headers["cache-control"] == "no-store"
    assert (await client.get("/v1/me", headers=auth)).json()["data"] == result


async def test_plain_json_content_type_is_accepted_for_patch(client: httpx.AsyncClient) -> None:
    auth = await _guest(client)
    r = await client.patch("/v1/me/data", json={"x": 1}, headers=auth)
    assert r.status_code == 200 and r.json() == {"data": {"x": 1}}


async def test_sixty_concurrent_patches_of_different_keys_lose_nothing(
    client: httpx.AsyncClient,
) -> None:
    auth = await _guest(client)
    results = await asyncio.gather(
        *(_patch(client, auth, {"favourites": {f"item{i}": True}, f"k{i}": i}) for i in range(60))
    )
    assert all(r.status_code == 200 for r in results)
    data = (await client.get("/v1/me", headers=auth)).json()["data"]
    assert data["favourites"] == {f"item{i}": True for i in range(60)}
    assert all(data[f"k{i}"] == i for i in range(60))


async def test_data_larger_than_the_limit_is_refused_and_nothing_changes(
    app_with: AppFactory,
) -> None:
    _, c = await app_with(data_max_bytes=1024)
    auth = await _guest(c)
    assert (await _patch(c, auth, {"keep": "me"})).status_code == 200
    r = await _patch(c, auth, {"big": "x" * 2000})
    assert r.status_code == 413 and r.json()["error"] == "data_too_large"
    r = await c.put("/v1/me/data", json={"big": "x" * 2000}, headers=auth)
    assert r.status_code == 413 and r.json()["error"] == "data_too_large"
    assert (await c.get("/v1/me", headers=auth)).json()["data"] == {"keep": "me"}


async def test_two_megabyte_body_is_refused_with_413(client: httpx.AsyncClient) -> None:
    auth = await _guest(client)
    r = await _patch(client, auth, {"big": "x" * 2_000_000})
    assert r.status_code == 413 and r.json()["error"] == "data_too_large"


@pytest.mark.parametrize("doc", [[1, 2], "text", 3, None, True])
async def test_non_object_documents_are_invalid_data(
    client: httpx.AsyncClient, doc: object
) -> None:
    auth = await _guest(client)
    for method in ("PATCH", "PUT"):
        r = await client.request(
            method,
            "/v1/me/data",
            content=json.dumps(doc),
            headers={**auth, "Content-Type": "application/json"},
        )
        assert r.status_code == 422 and r.json()["error"] == "invalid_data", (method, r.text)


@pytest.mark.parametrize(
    "doc",
    [
        {"nul": "a\u0000b"},
        {"a\u0000": 1},
        {"deep": __import__("functools").reduce(lambda acc, _: {"d": acc}, range(100), {})},
        {"huge": 2**64 - 1},
    ],
)
async def test_documents_postgres_cannot_store_are_invalid_data(
    client: httpx.AsyncClient, doc: dict
) -> None:
    auth = await _guest(client)
    r = await _patch(client, auth, doc)
    assert r.status_code == 422 and r.json()["error"] == "invalid_data", r.text


async def test_data_write_with_a_revoked_session_is_refused(client: httpx.AsyncClient) -> None:
    auth = await _guest(client)
    await client.post("/v1/anonymous")  # unrelated
    bad = {"Authorization": auth["Authorization"] + "x"}
    r = await _patch(client, bad, {"a": 1})
    assert r.status_code == 401 and r.json()["error"] == "invalid_session"
