"""Profile data: RFC 7396 merge patches applied atomically in PostgreSQL, replace, size limits."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from functools import reduce

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.errors import AnonidError
from app.lifecycle import anonymous
from tests.conftest import AppFactory, make_settings
from tests.test_json_merge import RFC_7396_EXAMPLES

# The statements are never sent (see _refused_without_touching_the_database): any URL will do.
SETTINGS = make_settings("postgresql://unused/none")

MERGE = {"Content-Type": "application/merge-patch+json"}


async def _guest(client: httpx.AsyncClient) -> dict[str, str]:
    token = (await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})).json()[
        "access_token"
    ]
    return {"Authorization": f"Bearer {token}"}


async def _patch(client: httpx.AsyncClient, auth: dict, doc: object) -> httpx.Response:
    return await client.patch("/v1/me/data", json=doc, headers={**auth, **MERGE})


# RFC 7396's appendix A examples that apply to a profile (an object, patched by an object).
OBJECT_EXAMPLES = [
    example for example in RFC_7396_EXAMPLES if all(isinstance(doc, dict) for doc in example)
]


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [
        *OBJECT_EXAMPLES,
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
        {"deep": reduce(lambda acc, _: {"d": acc}, range(100), {})},
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


# Bounded work per request (security finding 1): a merge patch of 20,000 keys cost PostgreSQL
# 15 s with 0001's functions, and nothing refused it before the statement ran.


async def _refused_without_touching_the_database(
    engine: AsyncEngine, write: Callable[[AsyncConnection], Awaitable[object]]
) -> AnonidError:
    """Run ``write`` on a read-only transaction: any statement it sent would fail with 25006,
    so an ``AnonidError`` here was raised before PostgreSQL saw the request."""
    async with engine.connect() as conn:
        await conn.execute(sa.text("SET TRANSACTION READ ONLY"))
        try:
            with pytest.raises(AnonidError) as refused:
                await write(conn)
        finally:
            await conn.rollback()
    return refused.value


async def test_patch_with_many_keys_is_refused_before_the_database(
    engine: AsyncEngine, client: httpx.AsyncClient
) -> None:
    many_keys = {f"key{i}": i for i in range(20_000)}
    refused = await _refused_without_touching_the_database(
        engine,
        lambda conn: anonymous.patch_data(conn, SETTINGS, uuid.uuid4(), 1, uuid.uuid4(), many_keys),
    )
    assert refused.code == "data_too_large" and "merge patch" in refused.message

    auth = await _guest(client)
    assert (await _patch(client, auth, {"keep": 1})).status_code == 200
    r = await _patch(client, auth, many_keys)
    assert r.status_code == 413 and r.json()["error"] == "data_too_large", r.text
    assert (await client.get("/v1/me", headers=auth)).json()["data"] == {"keep": 1}


async def test_patch_with_many_array_items_is_refused_before_the_database(
    engine: AsyncEngine, client: httpx.AsyncClient
) -> None:
    # 40,001 members in 80 kB: within the bytes a patch may have, beyond the members.
    many_items = {"seen": [0] * 40_000}
    refused = await _refused_without_touching_the_database(
        engine,
        lambda conn: anonymous.patch_data(
            conn, SETTINGS, uuid.uuid4(), 1, uuid.uuid4(), many_items
        ),
    )
    assert refused.code == "invalid_data" and "keys and array items" in refused.message

    auth = await _guest(client)
    r = await _patch(client, auth, many_items)
    assert r.status_code == 422 and r.json()["error"] == "invalid_data", r.text
    assert "keys and array items" in r.json()["message"]


@pytest.mark.parametrize(
    "doc",
    [
        {"seen": [0] * 40_000},  # too many members
        {"big": "x" * 70_000},  # more bytes than the stored limit
        {"deep": reduce(lambda acc, _: [acc], range(40), [])},  # nested past the depth
    ],
    ids=["members", "bytes", "depth"],
)
async def test_put_beyond_the_bounds_is_refused_before_the_database(
    engine: AsyncEngine, client: httpx.AsyncClient, doc: dict
) -> None:
    refused = await _refused_without_touching_the_database(
        engine,
        lambda conn: anonymous.replace_data(conn, SETTINGS, uuid.uuid4(), 1, uuid.uuid4(), doc),
    )
    assert refused.code in ("invalid_data", "data_too_large")
    auth = await _guest(client)
    r = await client.put("/v1/me/data", json=doc, headers=auth)
    assert (r.status_code, r.json()["error"]) == (refused.status, refused.code), r.text


async def test_patch_of_many_keys_within_the_bounds_is_answered(
    client: httpx.AsyncClient,
) -> None:
    auth = await _guest(client)
    keys = {f"k{i}": i for i in range(4000)}  # 39 kB, the first shape
    r = await _patch(client, auth, keys)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == keys
    r = await _patch(client, auth, dict.fromkeys(list(keys)[:3999]))
    assert r.status_code == 200 and r.json()["data"] == {"k3999": 3999}


async def test_patch_evaluates_the_merge_once_and_loses_no_concurrent_key(
    client: httpx.AsyncClient,
) -> None:
    """Many patches of one document at once, each adding and removing keys: every addition that
    was not removed is there, whatever order PostgreSQL serialised them in."""
    auth = await _guest(client)
    await client.put("/v1/me/data", json={f"gone{i}": i for i in range(40)}, headers=auth)
    results = await asyncio.gather(
        *(_patch(client, auth, {f"kept{i}": {"n": i}, f"gone{i}": None}) for i in range(40))
    )
    assert [r.status_code for r in results] == [200] * 40
    data = (await client.get("/v1/me", headers=auth)).json()["data"]
    assert data == {f"kept{i}": {"n": i} for i in range(40)}
