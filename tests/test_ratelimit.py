"""Rate limits: per client IP, per email, Retry-After, trusted proxies, shared through Redis."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from app.platform.ratelimit import client_ip, ip_bucket
from tests.account_support import bare_client, fresh_email, new_guest
from tests.conftest import AppFactory
from tests.processes import Served, clean_env, free_port

REDIS_DB = 12
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"


def _random_ip() -> str:
    return str(ipaddress.ip_address("198.18.0.0") + secrets.randbelow(2**17))


def _client_at(app: FastAPI, ip: str) -> httpx.AsyncClient:
    return bare_client(app, client=(ip, 40000))


async def _login(c: httpx.AsyncClient, email: str, **kw: object) -> httpx.Response:
    return await c.post("/v1/login", json={"email": email, "password": "whatever it is"}, **kw)  # type: ignore[arg-type]


def _assert_limited(r: httpx.Response, window: int = 60) -> None:
    assert r.status_code == 429, r.text
    assert r.json()["error"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= window


async def test_anonymous_accounts_are_limited_per_client_ip(app_with: AppFactory) -> None:
    application, _ = await app_with(anonymous_rate_limit="3/minute")
    ip, other_ip = _random_ip(), _random_ip()
    async with _client_at(application, ip) as c, _client_at(application, other_ip) as other:
        for _ in range(3):
            c.cookies.clear()
            assert (await c.post("/v1/anonymous")).status_code == 201
        c.cookies.clear()
        _assert_limited(await c.post("/v1/anonymous"))
        assert (await other.post("/v1/anonymous")).status_code == 201


async def test_login_is_limited_per_ip_and_per_email(app_with: AppFactory) -> None:
    application, _ = await app_with(login_rate_limit="3/minute")
    ip_a, ip_b = _random_ip(), _random_ip()
    target, other = fresh_email("target"), fresh_email("other")
    async with _client_at(application, ip_a) as a, _client_at(application, ip_b) as b:
        for _ in range(3):
            assert (await _login(a, target)).status_code == 401
        _assert_limited(await _login(a, target))
        _assert_limited(await _login(a, other))  # the IP is spent, whatever the address
        _assert_limited(await _login(b, target.upper()))  # the address is spent, from anywhere
        assert (await _login(b, other)).status_code == 401


async def test_conversion_and_reset_requests_count_against_the_same_limit(
    app_with: AppFactory,
) -> None:
    application, _ = await app_with(login_rate_limit="2/minute")
    email = fresh_email("spam-target")
    async with _client_at(application, _random_ip()) as c:
        for _ in range(2):
            assert (await c.post("/v1/password-reset", json={"email": email})).status_code == 202
        _assert_limited(await c.post("/v1/password-reset", json={"email": email}))
    async with _client_at(application, _random_ip()) as c:
        await new_guest(c)
        _assert_limited(await c.post("/v1/me/conversion", json={"email": email}))
        # The refused request still counted for this client's IP: one more, then the IP is spent.
        r = await c.post("/v1/me/conversion", json={"email": fresh_email("fresh")})
        assert r.status_code == 202
        _assert_limited(await c.post("/v1/me/conversion", json={"email": fresh_email()}))


def test_client_ip_believes_forwarded_for_only_from_trusted_proxies() -> None:
    proxies = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]
    # Untrusted peer: its header is ignored, whatever it says.
    assert client_ip("203.0.113.9", ["1.2.3.4"], proxies) == "203.0.113.9"
    # Trusted peer: the right-most address that is not a trusted proxy.
    assert client_ip("10.0.0.1", ["6.6.6.6, 1.2.3.4"], proxies) == "1.2.3.4"
    assert client_ip("10.0.0.1", ["6.6.6.6, 1.2.3.4, 10.9.9.9"], proxies) == "1.2.3.4"
    assert client_ip("10.0.0.1", ["6.6.6.6", "1.2.3.4"], proxies) == "1.2.3.4"
    assert client_ip("fd00::1", ["2001:db8::7"], proxies) == "2001:db8::7"
    # Nothing usable: fall back to the last address a trusted proxy vouched for.
    assert client_ip("10.0.0.1", [], proxies) == "10.0.0.1"
    assert client_ip("10.0.0.1", ["garbage, 10.2.2.2"], proxies) == "10.2.2.2"
    # No trusted proxies configured: never believed.
    assert client_ip("10.0.0.1", ["1.2.3.4"], []) == "10.0.0.1"


def test_ipv6_clients_share_a_bucket_per_64_and_ipv4_clients_per_address() -> None:
    assert ip_bucket("2001:db8:1:2::1") == ip_bucket("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert ip_bucket("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert ip_bucket("2001:db8:1:3::1") != ip_bucket("2001:db8:1:2::1")
    assert ip_bucket("::ffff:198.51.100.7") == "198.51.100.7"
    assert ip_bucket("198.51.100.7") == "198.51.100.7"
    assert ip_bucket("unknown") == "unknown"


async def test_new_ipv6_addresses_from_one_64_do_not_escape_the_limits(
    app_with: AppFactory,
) -> None:
    # One subscriber gets a whole /64: a new address per request is free for them.
    application, _ = await app_with(anonymous_rate_limit="2/minute", login_rate_limit="2/minute")
    prefix = f"2001:db8:{secrets.randbelow(65536):x}:{secrets.randbelow(65536):x}"
    codes, logins = [], []
    for i in range(3):
        async with _client_at(application, f"{prefix}::{i + 1:x}") as c:
            codes.append((await c.post("/v1/anonymous")).status_code)
            logins.append((await _login(c, fresh_email("v6"))).status_code)
    assert codes == [201, 201, 429]
    assert logins == [401, 401, 429]
    async with _client_at(application, f"2001:db8:ffff:{secrets.randbelow(65536):x}::1") as c:
        assert (await c.post("/v1/anonymous")).status_code == 201  # another /64: its own bucket


async def test_forwarded_addresses_are_limited_separately_behind_a_trusted_proxy(
    app_with: AppFactory,
) -> None:
    application, _ = await app_with(anonymous_rate_limit="2/minute", trusted_proxies="10.0.0.0/8")
    proxy = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"
    spoofer_ip = _random_ip()

    async def create(c: httpx.AsyncClient, forwarded: str) -> int:
        c.cookies.clear()
        r = await c.post("/v1/anonymous", headers={"X-Forwarded-For": forwarded})
        return r.status_code

    async with _client_at(application, proxy) as via_proxy:
        first, second = _random_ip(), _random_ip()
        assert [await create(via_proxy, first) for _ in range(3)] == [201, 201, 429]
        assert await create(via_proxy, f"{first}, {second}") == 201  # right-most counts
    async with _client_at(application, spoofer_ip) as direct:
        # Not a trusted proxy: a new forged address per request does not escape the limit.
        codes = [await create(direct, _random_ip()) for _ in range(3)]
        assert codes == [201, 201, 429]


async def test_unreachable_redis_fails_open_with_a_warning(
    app_with: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    dead_port = free_port(18280, 18299)
    application, _ = await app_with(
        rate_limit_storage=f"redis://127.0.0.1:{dead_port}/0", anonymous_rate_limit="1/minute"
    )
    with caplog.at_level(logging.WARNING, logger="anonid.ratelimit"):
        async with _client_at(application, _random_ip()) as c:
            for _ in range(3):
                c.cookies.clear()
                assert (await c.post("/v1/anonymous")).status_code == 201
            assert (await _login(c, fresh_email())).status_code == 401
    assert any("rate limit storage unavailable" in m for m in caplog.messages)


@pytest.fixture
async def redis_keys() -> AsyncIterator[list[str]]:
    """Markers (addresses, emails) whose Redis keys are deleted after the test."""
    markers: list[str] = []
    yield markers
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        for marker in markers:
            async for key in client.scan_iter(match=f"*{marker}*"):
                await client.delete(key)
    finally:
        await client.aclose()


async def test_limits_are_shared_by_processes_using_redis(
    app_with: AppFactory,
    database_url: str,
    tmp_path: Path,
    redis_keys: list[str],
) -> None:
    ip, email = _random_ip(), fresh_email("shared")
    redis_keys += [ip, email.lower()]
    limits = {"login_rate_limit": "3/minute", "trusted_proxies": "127.0.0.1"}
    application, _ = await app_with(rate_limit_storage=REDIS_URL, **limits)
    port = free_port(18200, 18280)
    env = clean_env(
        ANONID_DATABASE_URL=database_url,
        ANONID_RATE_LIMIT_STORAGE=REDIS_URL,
        ANONID_LOGIN_RATE_LIMIT="3/minute",
        ANONID_TRUSTED_PROXIES="127.0.0.1",
        ANONID_RUN_WORKER="false",
        ANONID_SMTP_URL=f"smtp://127.0.0.1:{free_port(18280, 18299)}",
        ANONID_PUBLIC_URL=f"http://127.0.0.1:{port}",
        ANONID_COOKIE_SECURE="false",
    )
    served = Served(tmp_path, env, port)
    try:
        await asyncio.to_thread(served.wait_ready)
        headers = {"X-Forwarded-For": ip}
        async with (
            _client_at(application, "127.0.0.1") as here,
            httpx.AsyncClient(base_url=served.base, timeout=30) as there,
        ):
            codes = [
                (await _login(here, email, headers=headers)).status_code,
                (await _login(there, email, headers=headers)).status_code,
                (await _login(here, email, headers=headers)).status_code,
            ]
            assert codes == [401, 401, 401]
            _assert_limited(await _login(there, email, headers=headers))
            _assert_limited(await _login(here, email, headers=headers))
    finally:
        served.stop()


async def test_profile_data_writes_beyond_the_rate_limit_answer_429(app_with: AppFactory) -> None:
    """Security finding 1: nothing limited PATCH /v1/me/data, so one guest could send the
    expensive patches as fast as the pool took them. PATCH and PUT share one limit per session."""
    application, _ = await app_with(data_rate_limit="3/minute")
    ip = _random_ip()  # one client address: the limit is the session's, not the address's
    async with _client_at(application, ip) as c, _client_at(application, ip) as other:
        await new_guest(c)
        await new_guest(other)
        assert (await c.patch("/v1/me/data", json={"a": 1})).status_code == 200
        assert (await c.put("/v1/me/data", json={"b": 2})).status_code == 200
        assert (await c.patch("/v1/me/data", json={"c": 3})).status_code == 200
        _assert_limited(await c.patch("/v1/me/data", json={"d": 4}))
        _assert_limited(await c.put("/v1/me/data", json={"e": 5}))
        assert (await c.get("/v1/me")).json()["data"] == {"b": 2, "c": 3}
        assert (await other.patch("/v1/me/data", json={"f": 6})).status_code == 200
    spec = application.openapi()
    for method in ("patch", "put"):
        responses = spec["paths"]["/v1/me/data"][method]["responses"]
        assert "429" in responses, method
