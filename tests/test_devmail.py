"""The local mail catcher and ``GET /dev/mail``: caught mail, newest first, links clickable."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.outbox.enqueue import enqueue_email
from app.platform.catcher import LocalCatcher, read_caught
from app.settings import Settings
from tests.conftest import client_for, make_settings, running_app
from tests.mailserver import MailServer
from tests.outbox_support import PORTS, address, running_worker, until
from tests.processes import Served, clean_env, free_port


@pytest.fixture
def catcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LocalCatcher]:
    """A running catcher, announced to apps created in this test as `serve` announces it."""
    local = LocalCatcher(tmp_path / "mail").start()
    for name, value in local.environment().items():
        monkeypatch.setenv(name, value)
    yield local
    local.stop()


async def enqueue_setup(engine: AsyncEngine, settings: Settings, to: str, token: str) -> None:
    async with engine.begin() as conn:
        await enqueue_email(
            conn,
            settings,
            kind="conversion_setup",
            to=to,
            user_id=None,
            context={"link": settings.link(settings.setup_url, token), "ttl_hours": 24},
        )


async def test_dev_mail_lists_caught_mail_newest_first_with_clickable_links(
    db: AsyncEngine, private_url: str, catcher: LocalCatcher
) -> None:
    settings = make_settings(private_url)
    first, second = address(), address()
    async with running_worker(db, settings, smtp_url=catcher.url):
        await enqueue_setup(db, settings, first, "tok-first")

        async def caught(n: int) -> bool:
            return len(read_caught(catcher.directory)) >= n

        await until(lambda: caught(1))
        await enqueue_setup(db, settings, second, "tok-second")
        await until(lambda: caught(2))

    async with running_app(settings) as app, client_for(app) as client:
        response = await client.get("/dev/mail")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    page = response.text
    assert page.index(second) < page.index(first)  # newest first
    assert page.count("Choose a password to keep your account") == 2
    link = "https://anonid.test/account/setup?token=tok-second"
    assert f'<a href="{link}" rel="noreferrer">{link}</a>' in page
    assert re.search(r"<time datetime=\"\d{4}-\d\d-\d\dT", page)


async def test_dev_mail_escapes_what_it_shows(
    db: AsyncEngine, private_url: str, catcher: LocalCatcher
) -> None:
    settings = make_settings(private_url)
    async with running_worker(db, settings, smtp_url=catcher.url):
        await enqueue_setup(db, settings, address(), 'x"><script>alert(1)</script>')

        async def caught() -> bool:
            return bool(read_caught(catcher.directory))

        await until(caught)
    async with running_app(settings) as app, client_for(app) as client:
        page = (await client.get("/dev/mail")).text
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)" in page


async def test_dev_mail_is_404_when_an_smtp_url_is_set(
    private_url: str, catcher: LocalCatcher
) -> None:
    with MailServer() as server:
        settings = make_settings(private_url, smtp_url=server.url)
        async with running_app(settings) as app, client_for(app) as client:
            response = await client.get("/dev/mail")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_dev_mail_is_404_without_a_catcher(private_url: str) -> None:
    async with running_app(make_settings(private_url)) as app, client_for(app) as client:
        response = await client.get("/dev/mail")
    assert response.status_code == 404


def _browser_at(app: object, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 50000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="https://anonid.test")


async def test_dev_mail_shows_reset_links_only_to_this_machine(
    private_url: str, catcher: LocalCatcher
) -> None:
    # A forgotten ANONID_SMTP_URL behind --host 0.0.0.0 (as the Dockerfile serves) must not
    # hand every reset link to whoever finds the page.
    async with running_app(make_settings(private_url, trusted_proxies="10.0.0.0/8")) as app:
        async with _browser_at(app, "203.0.113.9") as remote:
            refused = await remote.get("/dev/mail")
        async with _browser_at(app, "127.0.0.1") as local, _browser_at(app, "::1") as local6:
            assert (await local.get("/dev/mail")).status_code == 200
            assert (await local6.get("/dev/mail")).status_code == 200
            # A local reverse proxy that is not trusted forwards for someone else.
            forwarded = {"X-Forwarded-For": "203.0.113.9"}
            assert (await local.get("/dev/mail", headers=forwarded)).status_code == 404
        async with _browser_at(app, "10.1.2.3") as proxy:
            via_proxy = {"X-Forwarded-For": "203.0.113.9"}
            assert (await proxy.get("/dev/mail", headers=via_proxy)).status_code == 404
            local_via_proxy = {"X-Forwarded-For": "127.0.0.1"}
            assert (await proxy.get("/dev/mail", headers=local_via_proxy)).status_code == 200
    assert refused.status_code == 404
    assert refused.json()["error"] == "not_found"
    assert "ANONID_DEV_MAIL_PUBLIC" in refused.json()["message"]
    async with running_app(make_settings(private_url, dev_mail_public=True)) as app:
        async with _browser_at(app, "203.0.113.9") as remote:
            assert (await remote.get("/dev/mail")).status_code == 200


def _serve_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        ANONID_DATABASE_URL=database_url,
        ANONID_DATA_DIR=str(data_dir),
        ANONID_PUBLIC_URL="http://127.0.0.1:8000",
        ANONID_COOKIE_SECURE="false",
        ANONID_CULL_INTERVAL_MINUTES="0",
        **extra,
    )


async def test_serve_without_smtp_url_catches_mail_and_shows_it_at_dev_mail(
    db: AsyncEngine, private_url: str, tmp_path: Path
) -> None:
    served = Served(tmp_path, _serve_env(private_url, tmp_path / "data"), free_port(*PORTS))
    try:
        await asyncio.to_thread(served.wait_ready)
        settings = make_settings(private_url, public_url="http://127.0.0.1:8000")
        recipient = address()
        await enqueue_setup(db, settings, recipient, "served-token")
        async with httpx.AsyncClient(base_url=served.base, timeout=10) as client:

            async def shown() -> bool:
                return recipient in (await client.get("/dev/mail")).text

            await until(shown, timeout=30)
            page = (await client.get("/dev/mail")).text
    finally:
        await asyncio.to_thread(served.stop)
    log = served.log.read_text()
    assert f"read them at {served.base}/dev/mail" in log
    assert str((tmp_path / "data" / "mail").resolve()) in log
    link = "http://127.0.0.1:8000/account/setup?token=served-token"
    assert f'<a href="{link}"' in page
    assert list((tmp_path / "data" / "mail").glob("*.eml"))
