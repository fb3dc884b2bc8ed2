"""Non-ASCII local parts: delivered with SMTPUTF8 when the SMTP server offers it, else refused
with ``422 invalid_email`` at the API (never accepted and then undeliverable).

Real aiosmtpd servers with and without SMTPUTF8; the outbox worker delivers on this module's
private database.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.outbox.mail import SmtpTarget, offers_smtputf8, send_email
from app.platform.catcher import LocalCatcher, read_caught
from tests.account_support import fresh_email
from tests.conftest import client_for, make_settings, running_app
from tests.mailserver import MailServer, free_port, links_in
from tests.outbox_support import running_worker


def umlaut_address() -> str:
    return "jürgen-" + fresh_email()


async def ask_for_conversion(c: httpx.AsyncClient, email: str) -> httpx.Response:
    c.cookies.clear()
    assert (await c.post("/v1/anonymous")).status_code == 201
    return await c.post("/v1/me/conversion", json={"email": email})


async def test_non_ascii_local_part_is_delivered_when_the_server_offers_smtputf8(
    db: AsyncEngine, private_url: str
) -> None:
    with MailServer(smtputf8=True) as server:
        settings = make_settings(private_url, smtp_url=server.url)
        email = umlaut_address()
        async with running_app(settings) as app, client_for(app) as c:
            r = await ask_for_conversion(c, email)
            assert r.status_code == 202, r.text
            assert r.json()["pending_email"] == email
        async with running_worker(db, settings, smtp_url=server.url):
            msg = await server.wait_for(lambda m: m["To"] == email)
    assert server.envelopes[-1]["rcpt_tos"] == [email]
    assert links_in(msg), "the setup link"


async def test_non_ascii_local_part_is_refused_with_422_when_the_server_lacks_smtputf8(
    private_url: str,
) -> None:
    with MailServer() as server:
        settings = make_settings(private_url, smtp_url=server.url)
        async with running_app(settings) as app, client_for(app) as c:
            r = await ask_for_conversion(c, umlaut_address())
            assert r.status_code == 422, r.text
            body = r.json()
            assert body["error"] == "invalid_email" and "SMTPUTF8" in body["message"]
            assert (await c.get("/v1/me")).json()["state"] == "anonymous"
            # ASCII addresses and non-ASCII domains (IDNA A-labels on the wire) are fine.
            r = await ask_for_conversion(c, fresh_email().replace("example.org", "bücher.example"))
            assert r.status_code == 202, r.text
            assert r.json()["pending_email"].endswith("@xn--bcher-kva.example")


async def test_non_ascii_local_part_is_refused_while_the_answer_is_unknown_then_asked_again(
    private_url: str,
) -> None:
    server = MailServer(free_port(), smtputf8=True, autostart=False)  # not up at start
    settings = make_settings(private_url, smtp_url=server.url)
    async with running_app(settings) as app, client_for(app) as c:
        r = await ask_for_conversion(c, umlaut_address())
        assert r.status_code == 422 and "SMTPUTF8" in r.json()["message"], r.text
        server.start()
        try:
            r = await ask_for_conversion(c, umlaut_address())
            assert r.status_code == 422, "asked again at most once a minute"
            support = app.state.services.extras["smtputf8"]
            support.RETRY_SECONDS = 0.0  # the minute has passed
            r = await ask_for_conversion(c, umlaut_address())
            assert r.status_code == 202, r.text
        finally:
            server.stop()


async def test_the_local_catcher_offers_smtputf8_and_catches_such_mail(tmp_path: Path) -> None:
    catcher = LocalCatcher(tmp_path / "mail").start()
    try:
        target = SmtpTarget.parse(catcher.url)
        assert await offers_smtputf8(target)
        email = umlaut_address()
        payload = {
            "from": "anonid <no-reply@localhost>",
            "to": email,
            "subject": "Hallo",
            "text": "https://anonid.test/x",
            "html": "<p>x</p>",
            "message_id": "<m1@anonid.test>",
        }
        await send_email(target, payload)
        assert [m.to for m in read_caught(catcher.directory)] == [email]
    finally:
        catcher.stop()
