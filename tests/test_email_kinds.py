"""The emails of passwordless flows as a real SMTP server receives them from the outbox worker
(CONTRACT §7): ``conversion_setup``, ``login_code`` and ``email_change`` carry a link and a
six-digit code in both the text and the HTML part; ``email_changed`` tells the old address."""

from __future__ import annotations

import re
from email.message import EmailMessage

from tests.account_support import bare_client, fresh_email, new_guest, request_conversion
from tests.conftest import make_settings, running_app
from tests.mailserver import MailServer, html_of, links_in, text_of
from tests.outbox_support import private_engine, running_worker

CODE = re.compile(r"(?<![\w-])(\d{6})(?![\w-])")


def _well_formed(msg: EmailMessage, link_part: str) -> tuple[str, str]:
    """The link and the code of an email with a text and an HTML part that both carry them."""
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["Message-ID"] and msg["Date"] and msg["Content-Language"] == "en"
    text, html = text_of(msg), html_of(msg)
    link = next(u for u in links_in(msg) if link_part in u)
    assert link.startswith("https://anonid.test/")
    assert link in text and link.replace("&", "&amp;") in html
    codes = set(CODE.findall(text))
    assert len(codes) == 1, codes  # six consecutive digits, once
    [code] = codes
    assert code in html and CODE.search(html) is not None
    return link, code


async def test_each_new_email_kind_is_well_formed_with_its_link_and_code(
    server_url: str,
) -> None:
    with MailServer() as mail:
        async with private_engine(server_url) as (url, engine):
            settings = make_settings(url, smtp_url=mail.url)
            async with (
                running_app(settings) as application,
                running_worker(engine, settings, smtp_url=settings.smtp_url),
                bare_client(application) as device,
            ):
                await new_guest(device)
                email = fresh_email("kinds")
                assert (await request_conversion(device, email)).status_code == 202
                setup = await mail.wait_for(lambda m: m["To"] == email, timeout=20)
                assert setup["Subject"] == "Choose a password to keep your account"
                _, code = _well_formed(setup, "/account/setup?token=")
                r = await device.post("/v1/me/conversion/verify", json={"code": code})
                assert r.status_code == 200, r.text

                assert (await device.post("/v1/login/email", json={"email": email})).status_code
                login = await mail.wait_for(
                    lambda m: m["To"] == email and "log in" in m["Subject"], timeout=20
                )
                assert login["Subject"] == "Your code to log in to anonid"
                _, code = _well_formed(login, "/account/email?token=")
                r = await device.post("/v1/login/email/verify", json={"email": email, "code": code})
                assert r.status_code == 200, r.text

                new = fresh_email("kinds-new")
                assert (await device.post("/v1/me/email", json={"email": new})).status_code == 202
                change = await mail.wait_for(lambda m: m["To"] == new, timeout=20)
                assert change["Subject"] == "Confirm your new email address"
                link, _ = _well_formed(change, "/account/email?token=")
                token = link.split("token=", 1)[1]
                r = await device.post("/v1/me/email/verify", json={"token": token})
                assert r.status_code == 200 and r.json()["email"] == new

                changed = await mail.wait_for(
                    lambda m: m["To"] == email and "changed" in m["Subject"], timeout=20
                )
                assert changed["Subject"] == "The email address of your account was changed"
                assert changed.get_content_type() == "multipart/alternative"
                assert changed["Message-ID"]
                for part in (text_of(changed), html_of(changed)):
                    assert new in part and "https://anonid.test/account/login" in part
                    assert CODE.search(part) is None  # a notice: nothing to type
