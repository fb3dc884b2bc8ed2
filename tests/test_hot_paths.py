"""The plain-ASGI hot paths (``app.api.hot``) and their asyncpg pool (``app.platform.pgpool``)."""

from __future__ import annotations

import asyncio
import gc
import re

import asyncpg
import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.hot import HANDLERS, HotPaths
from app.main import create_app
from app.platform.pgpool import Statement, driver_dsn
from tests.conftest import BASE_URL, AppFactory, make_settings, pool_backend_pids


async def bearer_guest(client: httpx.AsyncClient) -> dict[str, str]:
    """A new guest's bearer session, as request headers."""
    created = await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['access_token']}"}


def test_a_statement_compiles_once_to_positional_parameters_in_a_fixed_order() -> None:
    stmt = Statement("UPDATE t SET a = :a WHERE id = :id AND a <> :a RETURNING :id AS x")
    assert stmt.order == ("a", "id")
    assert "$1" in stmt.sql and "$2" in stmt.sql and ":a" not in stmt.sql
    assert stmt.args({"id": 7, "a": "v", "unused": 0}) == ["v", 7]


def test_a_sqlalchemy_url_becomes_an_asyncpg_dsn_with_its_password() -> None:
    dsn = driver_dsn("postgresql+asyncpg://u:s3cret@db.example:5433/anonid?ssl=require")
    assert dsn == "postgresql://u:s3cret@db.example:5433/anonid?ssl=require"


async def test_hot_endpoints_work_the_same_behind_a_root_path_through_their_declarations(
    app: FastAPI,
) -> None:
    # Under a root path the plain-ASGI dispatch steps aside and FastAPI's declarations answer,
    # delegating to the same handlers.
    transport = httpx.ASGITransport(app=app, root_path="/auth")
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL + "/auth") as c:
        created = await c.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})
        assert created.status_code == 201, created.text
        auth = {"Authorization": f"Bearer {created.json()['access_token']}"}
        me = await c.get("/v1/me", headers=auth)
        assert me.status_code == 200 and me.json()["id"] == created.json()["user"]["id"]
        patched = await c.patch("/v1/me/data", json={"a": {"b": 1}}, headers=auth)
        assert patched.status_code == 200 and patched.json() == {"data": {"a": {"b": 1}}}
        refused = await c.get("/v1/me", headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_session"


async def test_hot_pool_connections_are_returned_without_an_open_transaction(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    # The pool skips asyncpg's per-release reset query; no request may leave a transaction
    # (and its locks) behind on a pooled connection, whatever the outcome.
    _, c = await app_with()
    auth = await bearer_guest(c)
    for _ in range(5):
        assert (await c.get("/v1/me", headers=auth)).status_code == 200
        assert (await c.patch("/v1/me/data", json={"n": 1}, headers=auth)).status_code == 200
        too_big = await c.patch("/v1/me/data", json={"x": "y" * 70_000}, headers=auth)
        assert too_big.status_code in (413, 422)
        assert (await c.patch("/v1/me/data", content=b"{", headers=auth | _JSON)).status_code == 400
    async with engine.connect() as conn:
        states = (
            await conn.execute(
                sa.text(
                    "SELECT state FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        ).scalars()
        assert not [s for s in states if s and s.startswith("idle in transaction")]


_JSON = {"Content-Type": "application/json"}


async def test_hot_requests_are_logged_and_counted_under_their_route_templates(
    client: httpx.AsyncClient,
) -> None:
    auth = await bearer_guest(client)
    await client.get("/v1/me", headers=auth)
    await client.patch("/v1/me/data", json={"k": 1}, headers=auth)
    text = (await client.get("/metrics")).text
    for method, route, status in (
        ("POST", "/v1/anonymous", "201"),
        ("GET", "/v1/me", "200"),
        ("PATCH", "/v1/me/data", "200"),
    ):
        pattern = (
            r"anonid_http_requests_total\{[^}]*"
            + rf'method="{method}",route="{re.escape(route)}",status="{status}"'
        )
        assert re.search(pattern, text), (method, route, status)


def test_the_hot_dispatch_names_the_fastapi_declaration_of_each_hot_route(app: FastAPI) -> None:
    # So the observer labels them without matching the path against every documented template.
    hot = HotPaths(app, routes=app.routes)
    for method, path in HANDLERS:
        route = hot._route((method, path))
        assert isinstance(route, APIRoute) and route.path == path and method in route.methods


async def test_a_serving_app_freezes_its_heap_once_its_pools_exist(database_url: str) -> None:
    def collected_later(obj: object) -> bool:
        # Frozen objects sit in the permanent generation, which gc.get_objects() leaves out.
        return id(obj) in {id(o) for o in gc.get_objects()}

    for freeze in (False, True):
        app = create_app(make_settings(database_url), database_url=database_url, freeze_heap=freeze)
        try:
            async with app.router.lifespan_context(app):
                services = app.state.services
                assert collected_later(services.pool) is not freeze
                assert collected_later(services.keys) is not freeze
        finally:
            gc.unfreeze()  # a test process builds many apps; let them be collected


async def test_hot_pool_connections_killed_by_the_server_are_replaced_never_answering_500(
    app_with: AppFactory, database_url: str
) -> None:
    application, c = await app_with()
    auth = await bearer_guest(c)

    async def wave() -> list[int]:
        calls = [c.get("/v1/me", headers=auth) for _ in range(12)]
        calls += [c.patch("/v1/me/data", json={"n": i}, headers=auth) for i in range(12)]
        return [r.status_code for r in await asyncio.gather(*calls)]

    assert set(await wave()) == {200}  # the pool now holds several connections
    # Only this app's hot-pool backends: other tests' apps share the database.
    pids = await pool_backend_pids(application)
    killer = await asyncpg.connect(driver_dsn(database_url))
    try:
        killed = await killer.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM unnest($1::int[]) AS pid", pids
        )
    finally:
        await killer.close()
    assert killed > 0
    statuses = await wave()
    assert set(statuses) <= {200, 503}, statuses
    for _ in range(20):
        if set(await wave()) == {200}:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("the hot paths did not recover after their connections were killed")
