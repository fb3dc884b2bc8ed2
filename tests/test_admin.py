"""The admin API: key required (constant-time), listing with keyset pagination, get, delete, cull."""

from __future__ import annotations

import hmac
import uuid

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api import admin as admin_api
from app.lifecycle.cull import run_cull
from app.lifecycle.listing import list_statement
from tests.conftest import AppFactory, client_for, make_settings, running_app
from tests.lifecycle_support import (
    ADMIN_KEY,
    FAR_CUTOFF_DAYS,
    FAR_PAST_DAYS,
    add_link,
    admin_headers,
    backdate,
    existing,
    insert_guests,
    insert_registered,
    new_guest,
)
from tests.outbox_support import private_engine

ADMIN_CALLS = [
    ("GET", "/v1/admin/users"),
    ("GET", f"/v1/admin/users/{uuid.uuid4()}"),
    ("DELETE", f"/v1/admin/users/{uuid.uuid4()}"),
    ("POST", "/v1/admin/cull"),
    ("GET", "/v1/admin/stats"),
]


@pytest.fixture
async def admin(app_with: AppFactory) -> httpx.AsyncClient:
    _, client = await app_with(admin_api_key=ADMIN_KEY)
    client.headers.update(admin_headers())
    return client


async def _call(client: httpx.AsyncClient, method: str, path: str, **kw) -> httpx.Response:
    if method == "POST":
        kw.setdefault("json", {"dry_run": True})
    return await client.request(method, path, **kw)


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
async def test_without_a_configured_key_every_admin_call_is_unauthorized(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    for headers in ({}, admin_headers(), admin_headers("")):
        r = await _call(client, method, path, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"] == "unauthorized"


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
async def test_wrong_or_missing_key_is_unauthorized(
    app_with: AppFactory, method: str, path: str
) -> None:
    _, client = await app_with(admin_api_key=ADMIN_KEY)
    for headers in (
        {},
        admin_headers(ADMIN_KEY + "x"),
        admin_headers(ADMIN_KEY[:-1]),
        {"Authorization": f"Basic {ADMIN_KEY}"},
        {"Authorization": ADMIN_KEY},
        {"Authorization": ("Bearer " + "ü" * 10).encode()},
    ):
        r = await _call(client, method, path, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"] == "unauthorized"


async def test_the_key_is_compared_in_constant_time(
    admin: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(admin_api.hmac, "compare_digest", spy)
    assert (await admin.get("/v1/admin/stats")).status_code == 200
    r = await admin.get("/v1/admin/stats", headers=admin_headers("nope"))
    assert r.status_code == 401
    assert compared == [(ADMIN_KEY.encode(), ADMIN_KEY.encode()), (b"nope", ADMIN_KEY.encode())]


async def test_admin_calls_are_not_subject_to_the_cookie_csrf_rule(
    admin: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    (victim,) = await insert_guests(engine, 1)
    r = await admin.delete(
        f"/v1/admin/users/{victim}",
        headers={"Origin": "https://evil.example", "Cookie": "anonid_session=whatever"},
    )
    assert r.status_code == 204


async def test_get_user_returns_the_user_object(
    admin: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    registered, email = await insert_registered(engine)
    r = await admin.get(f"/v1/admin/users/{registered}")
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == registered and body["email"] == email and body["state"] == "registered"
    assert "password_hash" not in r.text and "$argon2id" not in r.text
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "bad_id", ["not-a-uuid", "0", "%00", "x" * 5000, "123e4567-e89b-12d3-a456-4266141740000"]
)
async def test_unknown_or_malformed_ids_are_not_found_never_5xx(
    admin: httpx.AsyncClient, bad_id: str
) -> None:
    for method in ("GET", "DELETE"):
        r = await admin.request(method, f"/v1/admin/users/{bad_id}")
        assert r.status_code == 404, r.text
        assert r.json()["error"] == "not_found"
    r = await admin.get(f"/v1/admin/users/{uuid.uuid4()}")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


async def test_admin_delete_erases_the_account_and_records_user_deleted(
    admin: httpx.AsyncClient, engine: AsyncEngine, client: httpx.AsyncClient
) -> None:
    user, token = await new_guest(client)
    await add_link(engine, user)
    async with engine.connect() as conn:
        before = await conn.scalar(sa.text("SELECT count(*) FROM events WHERE type='user.deleted'"))

    assert (await admin.delete(f"/v1/admin/users/{user}")).status_code == 204

    assert await existing(engine, [user]) == set()
    async with engine.connect() as conn:
        after = await conn.scalar(sa.text("SELECT count(*) FROM events WHERE type='user.deleted'"))
        links = await conn.scalar(
            sa.text("SELECT count(*) FROM link_tokens WHERE user_id = :u"), {"u": uuid.UUID(user)}
        )
    assert after == before + 1 and links == 0
    assert (await admin.get(f"/v1/admin/users/{user}")).status_code == 404
    assert (await admin.delete(f"/v1/admin/users/{user}")).status_code == 404
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 401


async def test_list_filters_by_state_email_and_inactivity(
    admin: httpx.AsyncClient, engine: AsyncEngine, database_url: str
) -> None:
    registered, email = await insert_registered(engine)
    r = await admin.get("/v1/admin/users", params={"email": email.upper()})
    assert r.status_code == 200
    assert [u["id"] for u in r.json()["users"]] == [registered]
    assert r.json()["next_cursor"] is None

    stale = await insert_guests(engine, 3, days_ago=FAR_PAST_DAYS)
    r = await admin.get(
        "/v1/admin/users", params={"state": "anonymous", "inactive_days": FAR_CUTOFF_DAYS}
    )
    listed = {u["id"] for u in r.json()["users"]}
    assert set(stale) <= listed
    assert all(u["state"] == "anonymous" for u in r.json()["users"])
    r = await admin.get(
        "/v1/admin/users", params={"state": "registered", "inactive_days": FAR_CUTOFF_DAYS}
    )
    assert not set(stale) & {u["id"] for u in r.json()["users"]}

    r = await admin.get("/v1/admin/users", params={"state": "registered", "limit": 500})
    assert all(u["state"] == "registered" and not u["is_anonymous"] for u in r.json()["users"])
    await run_cull(engine, make_settings(database_url), older_than_days=FAR_CUTOFF_DAYS)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"limit": "ten"},
        {"state": "deleted"},
        {"inactive_days": -1},
        {"inactive_days": 10**12},
        {"cursor": "!!not-a-cursor!!"},
        {"cursor": "AAAA"},
        {"email": "x" * 1000},
    ],
)
async def test_bad_list_parameters_are_invalid_request(
    admin: httpx.AsyncClient, params: dict
) -> None:
    r = await admin.get("/v1/admin/users", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_request"


async def test_pagination_visits_every_account_once_while_accounts_come_and_go(
    admin: httpx.AsyncClient, engine: AsyncEngine, database_url: str
) -> None:
    settings = make_settings(database_url)
    survivors = await insert_guests(engine, 25, days_ago=FAR_PAST_DAYS)
    doomed = survivors[5:20:3]  # culled while the listing is under way
    survivors = [s for s in survivors if s not in doomed]
    params = {"state": "anonymous", "inactive_days": FAR_CUTOFF_DAYS, "limit": 4}

    seen: list[str] = []
    added: list[str] = []
    cursor = None
    pages = 0
    while True:
        r = await admin.get("/v1/admin/users", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["users"]) <= 4
        seen.extend(u["id"] for u in body["users"])
        pages += 1
        if pages == 2:
            # Cull the doomed ones (moved further into the past) between pages.
            await backdate(engine, doomed, FAR_PAST_DAYS + 1000)
            result = await run_cull(engine, settings, older_than_days=FAR_PAST_DAYS + 500)
            assert result["deleted"] >= len(doomed)
        if pages <= 4:
            added += await insert_guests(engine, 2, days_ago=FAR_PAST_DAYS)
        cursor = body["next_cursor"]
        if cursor is None:
            break
        params["cursor"] = cursor

    assert len(seen) == len(set(seen)), "an account was listed twice"
    assert set(survivors) <= set(seen)
    assert set(added) <= set(seen)
    assert not (set(doomed) & set(seen[8:])), "a culled account appeared after its cull"
    await run_cull(engine, settings, older_than_days=FAR_CUTOFF_DAYS)


async def test_admin_cull_returns_the_cull_object(
    admin: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    stale = await insert_guests(engine, 2, days_ago=FAR_PAST_DAYS)
    r = await admin.post(
        "/v1/admin/cull", json={"dry_run": True, "older_than_days": FAR_CUTOFF_DAYS}
    )
    assert r.status_code == 200, r.text
    dry = r.json()
    assert set(dry) == {"cutoff", "matched", "deleted", "batches", "dry_run"}
    assert dry["dry_run"] is True and dry["matched"] >= 2 and dry["deleted"] == 0
    assert await existing(engine, stale) == set(stale)

    r = await admin.post(
        "/v1/admin/cull", json={"dry_run": False, "older_than_days": FAR_CUTOFF_DAYS}
    )
    assert r.status_code == 200 and r.json()["deleted"] == dry["matched"]
    assert await existing(engine, stale) == set()


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"{",
        b'{"dry_run": "yes"}',
        b'{"older_than_days": -1}',
        b'{"older_than_days": 0}',
        b'{"older_than_days": 1e9}',
        b'{"older_than_days": "40"}',
        b'{"surprise": true}',
    ],
)
async def test_bad_cull_bodies_are_refused_without_culling(
    admin: httpx.AsyncClient, body: bytes
) -> None:
    r = await admin.post(
        "/v1/admin/cull", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code in (400, 422), r.text
    assert r.json()["error"] in ("invalid_json", "invalid_request")


async def test_openapi_documents_the_admin_endpoints(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path, method in [
        ("/v1/admin/users", "get"),
        ("/v1/admin/users/{user_id}", "get"),
        ("/v1/admin/users/{user_id}", "delete"),
        ("/v1/admin/cull", "post"),
        ("/v1/admin/stats", "get"),
    ]:
        operation = spec["paths"][path][method]
        assert "401" in operation["responses"], (path, method)
        assert operation.get("security"), (path, method)


async def _listed(client: httpx.AsyncClient, **params: object) -> list[str]:
    """Every id the filter lists, page by page (two per page)."""
    ids: list[str] = []
    query = {**params, "limit": 2}
    while True:
        r = await client.get("/v1/admin/users", params=query)
        assert r.status_code == 200, r.text
        ids += [u["id"] for u in r.json()["users"]]
        if r.json()["next_cursor"] is None:
            return ids
        query["cursor"] = r.json()["next_cursor"]


async def test_each_admin_filter_returns_exactly_its_users_page_by_page(server_url: str) -> None:
    async with private_engine(server_url) as (url, engine):
        settings = make_settings(url, admin_api_key=ADMIN_KEY)
        fresh = await insert_guests(engine, 3)
        idle = await insert_guests(engine, 3, days_ago=50)
        pending = await insert_guests(engine, 3, days_ago=20)
        lapsed = await insert_guests(engine, 2)  # a conversion request that expired
        registered = [(await insert_registered(engine))[0] for _ in range(2)]
        idle_registered, idle_email = await insert_registered(engine, days_ago=50)
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "UPDATE users SET pending_email = 'p-' || left(id::text, 8) || '@x.test',"
                    " pending_until = now() + CASE WHEN id = ANY(CAST(:p AS uuid[]))"
                    " THEN interval '1 hour' ELSE interval '-1 hour' END"
                    " WHERE id = ANY(CAST(:p AS uuid[])) OR id = ANY(CAST(:l AS uuid[]))"
                ),
                {"p": [uuid.UUID(i) for i in pending], "l": [uuid.UUID(i) for i in lapsed]},
            )
        anonymous = fresh + idle + lapsed
        every = anonymous + pending + registered + [idle_registered]
        expected = {
            (): every,
            (("state", "anonymous"),): anonymous,
            (("state", "pending"),): pending,
            (("state", "registered"),): [*registered, idle_registered],
            (("inactive_days", 10),): idle + pending + [idle_registered],
            (("inactive_days", 30),): [*idle, idle_registered],
            (("inactive_days", 0),): every,
            (("state", "anonymous"), ("inactive_days", 10)): idle,
            (("state", "pending"), ("inactive_days", 10)): pending,
            (("state", "pending"), ("inactive_days", 30)): [],
            (("state", "registered"), ("inactive_days", 30)): [idle_registered],
            (("email", idle_email.upper()),): [idle_registered],
            (("email", idle_email), ("state", "anonymous")): [],
        }
        async with running_app(settings) as app, client_for(app) as client:
            client.headers.update(admin_headers())
            for params, ids in expected.items():
                listed = await _listed(client, **dict(params))
                # Every match once, in id order, across pages of two.
                assert listed == sorted(ids, key=uuid.UUID), params


async def test_admin_filters_read_through_their_indexes_never_a_whole_table(
    server_url: str,
) -> None:
    # 60,000 accounts, a few of each rare kind: big enough that the planner's choices are those
    # of a real table (EXPLAIN only: plans, not timings).
    async with private_engine(server_url) as (_, engine):
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, username, email, is_anonymous, password_hash,"
                    " pending_email, pending_until, created_at, updated_at)"
                    " SELECT gen_random_uuid(), CASE WHEN g % 1000 <> 0 THEN 'g' || g END,"
                    " CASE WHEN g % 1000 = 0 THEN 'u' || g || '@x.test' END, g % 1000 <> 0,"
                    " CASE WHEN g % 1000 = 0 THEN 'h' END,"
                    " CASE WHEN g % 1000 = 1 THEN 'p' || g || '@x.test' END,"
                    " CASE WHEN g % 1000 = 1 THEN now() + interval '1 hour' END,"
                    " now() - (g % 7) * interval '1 day', now() - (g % 7) * interval '1 day'"
                    " - CASE WHEN g % 2000 = 0 THEN interval '90 days' ELSE interval '0' END"
                    " FROM generate_series(1, 60000) g"
                )
            )
            await conn.execute(sa.text("ANALYZE users"))
        served_by = {
            ("pending", False, False): "ix_users_pending_until",
            ("pending", True, False): "ix_users_pending_until",
            ("registered", True, False): "ix_users_registered_updated_at",
            (None, True, False): "ix_users_registered_updated_at",
            (None, False, True): "uq_users_email",
        }
        params = {"limit": 51, "inactive_days": 60, "email": "u1000@x.test"}
        async with engine.begin() as conn:
            for state in (None, "anonymous", "pending", "registered"):
                for inactive in (False, True):
                    for email in (False, True):
                        case = (state, inactive, email)
                        statement = list_statement(*case, False)
                        explain = sa.text("EXPLAIN " + statement.text)
                        plan = "\n".join(await conn.scalars(explain, params))
                        assert "Seq Scan" not in plan, (case, plan)
                        assert served_by.get(case, "") in plan, (case, plan)


async def test_anonymous_accounts_page_through_their_own_index_past_the_registered_ones(
    server_url: str,
) -> None:
    # Where registered accounts are a large share (the oldest ids of a real table are mostly
    # registered), state=anonymous walks the partial index of anonymous ids (migration 0008),
    # not the primary key. (With 99.9 % guests the two plans cost the same and either may win.)
    async with private_engine(server_url) as (_, engine):
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO users (id, username, email, is_anonymous, password_hash)"
                    " SELECT gen_random_uuid(), CASE WHEN g % 5 >= 2 THEN 'g' || g END,"
                    " CASE WHEN g % 5 < 2 THEN 'u' || g || '@x.test' END, g % 5 >= 2,"
                    " CASE WHEN g % 5 < 2 THEN 'h' END"
                    " FROM generate_series(1, 60000) g"
                )
            )
            await conn.execute(sa.text("ANALYZE users"))
        statement = list_statement("anonymous", False, False, False)
        async with engine.begin() as conn:
            plan = "\n".join(
                await conn.scalars(sa.text("EXPLAIN " + statement.text), {"limit": 51})
            )
        assert "ix_users_anonymous_id" in plan, plan
