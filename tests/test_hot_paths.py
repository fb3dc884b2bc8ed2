"""The plain-ASGI hot paths (``app.api.hot``) and their asyncpg pool (``app.platform.pgpool``)."""

from __future__ import annotations

import asyncio
import gc
import re
import time
from collections.abc import Awaitable

import asyncpg
import httpx
import jwt
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.hot import HANDLERS, HotPaths
from app.main import create_app
from app.platform.pgpool import Statement, driver_dsn
from tests.conftest import BASE_URL, AppFactory, make_settings, pool_backend_pids
from tests.tokens import sign


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


class StatementCounter:
    """Every statement the app sends: through the hot pool and through the engine."""

    def __init__(self, application: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        svc = application.state.services
        original = svc.pool._execute

        async def counted(method: str, sql: str, args: list[object]) -> object:
            self.count += 1
            return await original(method, sql, args)

        monkeypatch.setattr(svc.pool, "_execute", counted)
        self._engine = svc.engine.sync_engine
        sa.event.listen(self._engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, *args: object) -> None:
        self.count += 1

    def close(self) -> None:
        sa.event.remove(self._engine, "before_cursor_execute", self._on_execute)

    async def of(self, request: Awaitable[httpx.Response], status: int = 200) -> int:
        before = self.count
        response = await request
        assert response.status_code == status, response.text
        return self.count - before


async def test_hot_paths_cost_one_statement_while_the_access_token_is_fresh(
    app: FastAPI, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = StatementCounter(app, monkeypatch)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=BASE_URL
        ) as browser:
            # A new guest: the user, its session, its refresh token's hash and its event.
            assert await counter.of(browser.post("/v1/anonymous"), 201) == 1
            assert await counter.of(browser.get("/v1/me")) == 1
            patch = browser.patch(
                "/v1/me/data",
                content=b'{"a": 1}',
                headers={"Content-Type": "application/merge-patch+json"},
            )
            assert await counter.of(patch) == 1
            assert await counter.of(browser.post("/v1/session/refresh")) == 1
            # The counter sees the engine's statements too: a FastAPI route checks the session
            # on the hot pool, then reads through the engine.
            assert await counter.of(browser.get("/v1/me/sessions")) == 2
            # An expired access cookie: the renewal reads the user too, so GET /v1/me is still
            # one statement; a write costs the renewal and itself.
            claims = jwt.decode(
                browser.cookies["anonid_session"], options={"verify_signature": False}
            )
            now = int(time.time())
            expired = await sign(engine, {**claims, "iat": now - 100, "exp": now - 10})
            browser.cookies.set("anonid_session", expired, domain="anonid.test")
            assert await counter.of(browser.get("/v1/me")) == 1
            browser.cookies.set("anonid_session", expired, domain="anonid.test")
            patch = browser.patch(
                "/v1/me/data",
                content=b'{"b": 2}',
                headers={"Content-Type": "application/merge-patch+json"},
            )
            assert await counter.of(patch) == 2
    finally:
        counter.close()


async def test_guests_created_at_once_share_statements_and_each_gets_its_own_session(
    app: FastAPI, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New guests arriving together are written by shared statements (app.platform.coalesce),
    and no browser is handed another's account, session or refresh token."""
    browsers = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)
        for _ in range(40)
    ]
    counter = StatementCounter(app, monkeypatch)
    try:
        created = await asyncio.gather(*(b.post("/v1/anonymous") for b in browsers))
        statements = counter.count
    finally:
        counter.close()
    assert [r.status_code for r in created] == [201] * 40
    ids = [r.json()["user"]["id"] for r in created]
    assert len(set(ids)) == 40
    assert statements < 40
    try:
        for browser, user_id in zip(browsers, ids, strict=True):
            token = browser.cookies["anonid_session"]
            claims = jwt.decode(token, options={"verify_signature": False})
            assert claims["sub"] == user_id
            me = await browser.get("/v1/me")
            assert me.status_code == 200 and me.json()["id"] == user_id
            renewed = await browser.post("/v1/session/refresh")
            assert renewed.status_code == 200 and renewed.json()["user"]["id"] == user_id
    finally:
        for browser in browsers:
            await browser.aclose()
    async with engine.connect() as conn:
        sessions = await conn.execute(
            sa.text("SELECT user_id::text, count(*) FROM sessions GROUP BY user_id"),
        )
        per_user = dict(sessions.all())
        events = await conn.scalar(
            sa.text(
                "SELECT count(DISTINCT user_id) FROM events "
                "WHERE type = 'user.anonymous_created' AND user_id::text = ANY(:ids)"
            ),
            {"ids": ids},
        )
    assert all(per_user.get(user_id) == 1 for user_id in ids)
    assert events == 40


async def test_refreshes_at_once_share_statements_and_each_rotates_its_own_session(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rotations arriving together are written by shared statements (app.sessions.refresh
    .Rotations); each request gets its own session back, and every new token is the live one."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE_URL
    ) as device:
        guests = [
            (await device.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})).json()
            for _ in range(30)
        ]
        counter = StatementCounter(app, monkeypatch)
        try:
            answers = await asyncio.gather(
                *(
                    device.post(
                        "/v1/session/refresh",
                        headers={"X-Anonid-Token": "bearer"},
                        json={"refresh_token": g["refresh_token"]},
                    )
                    for g in guests
                )
            )
            statements = counter.count
        finally:
            counter.close()
        assert [a.status_code for a in answers] == [200] * 30
        assert statements < 30
        for guest, answer in zip(guests, answers, strict=True):
            body = answer.json()
            assert body["user"]["id"] == guest["user"]["id"]
            claims = jwt.decode(body["access_token"], options={"verify_signature": False})
            before = jwt.decode(guest["access_token"], options={"verify_signature": False})
            assert claims["sub"] == guest["user"]["id"] and claims["sid"] == before["sid"]
            again = await device.post(
                "/v1/session/refresh",
                headers={"X-Anonid-Token": "bearer"},
                json={"refresh_token": body["refresh_token"]},
            )
            assert again.status_code == 200 and again.json()["user"]["id"] == guest["user"]["id"]
