"""Branding (CONTRACT §15): ``ANONID_BRAND_NAME``, ``_LOGO_URL`` and ``_COLOR`` in every email,
hosted page and the console; ``ANONID_TEMPLATES_DIR`` replaces any shipped template by its path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.outbox.enqueue import EMAIL_KINDS, render_email
from app.platform.catcher import CATCHER_DIR_ENV
from app.platform.templating import SHIPPED, brand_of, contrast
from app.settings import SettingsError, load_settings
from tests.account_support import bare_client, fresh_email, new_guest, outbox_emails
from tests.conftest import AppFactory, make_settings
from tests.console_support import sign_in
from tests.lifecycle_support import ADMIN_KEY

LOGO = "https://cdn.teapot.example/logo.svg"
BRAND = {"brand_name": "Teapot & Co", "brand_logo_url": LOGO, "brand_color": "#6B2D8B"}
CONTEXT = {
    "link": "https://id.teapot.example/account/setup?token=t",
    "ttl_hours": 24,
    "ttl_minutes": 60,
    "login_url": "https://id.teapot.example/account/login",
    "reset_request_url": "https://id.teapot.example/account/reset",
    "code": "123456",
    "code_ttl_minutes": 10,
    "new_email": "new@teapot.example",
}


@pytest.mark.parametrize("kind", EMAIL_KINDS)
def test_every_email_carries_the_brand_name_logo_and_colour(kind: str, database_url: str) -> None:
    payload = render_email(
        make_settings(database_url, **BRAND), kind, "a@example.org", CONTEXT, "de"
    )
    assert "Teapot & Co" in payload["text"]
    assert "Teapot &amp; Co" in payload["html"]  # escaped in HTML, as every value is
    assert f'<img src="{LOGO}" alt="Teapot &amp; Co"' in payload["html"]
    assert "border-top:6px solid #6b2d8b" in payload["html"]


def test_without_a_brand_emails_say_anonid_and_show_no_image(database_url: str) -> None:
    payload = render_email(
        make_settings(database_url), "password_changed", "a@e.org", CONTEXT, "en"
    )
    assert "This email was sent by anonid." in payload["text"] and "<img" not in payload["html"]


async def test_every_hosted_page_and_the_console_carry_the_brand(
    app_with: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CATCHER_DIR_ENV, str(tmp_path))
    app, _ = await app_with(admin_api_key=ADMIN_KEY, **BRAND)
    async with bare_client(app) as browser:
        pages = [
            await browser.get(path)
            for path in (
                "/account/login",
                "/account/reset",
                "/account/setup?token=unknown",
                "/account/reset?token=unknown",
                "/account/email?token=unknown",
                "/dev/mail",
                "/admin/signin",
            )
        ]
        await sign_in(browser)
        pages += [await browser.get(path) for path in ("/admin", "/admin/users", "/admin/cull")]
    for page in pages:
        where = page.url.path
        assert re.search(r"<title>[^<]*Teapot &amp; Co", page.text), where
        assert f'<img src="{LOGO}" alt="Teapot &amp; Co">' in page.text, where
        assert "--accent: #6b2d8b" in page.text, where
        policy = page.headers["content-security-policy"]
        assert "img-src data: https://cdn.teapot.example;" in policy, where
        assert "default-src 'none'" in policy, where
        # No script at all, or (pages offering passkeys) anonid's own script file only.
        scripts = re.findall(r"script-src ([^;]*)", policy)
        assert scripts in ([], ["'self'"]), where


def test_text_on_the_brand_colour_stays_readable() -> None:
    for color, text in (("#ffcc00", "#111111"), ("#2754c5", "#ffffff"), ("#fff", "#111111")):
        brand = brand_of(load_settings(brand_color=color, _env_file=None))
        assert brand.on_color == text
        assert contrast(brand.color, brand.on_color) >= 4.5, color


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("brand_color", "red"),
        ("brand_color", "#12345"),
        ("brand_color", "#123456; background: url(x)"),
        ("brand_logo_url", "javascript:alert(1)"),
        ("brand_logo_url", "/logo.png"),
        ("brand_logo_url", 'https://x.example/a.png" onerror="alert(1)'),
        ("brand_logo_url", "https://x.example/a.png; script-src *"),
        ("templates_dir", "/nonexistent/anonid-templates"),
        ("brand_name", ""),
    ],
)
def test_unsafe_or_broken_brand_settings_refuse_to_start(setting: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"ANONID_{setting.upper()}"):
        load_settings(**{setting: value}, _env_file=None)


async def test_a_template_in_templates_dir_replaces_the_shipped_one_of_the_same_path(
    app_with: AppFactory, tmp_path: Path, engine: AsyncEngine
) -> None:
    (tmp_path / "pages").mkdir()
    (tmp_path / "email").mkdir()
    (tmp_path / "admin").mkdir()
    # A replacement may extend the shipped layout by its name.
    (tmp_path / "pages" / "login.html").write_text(
        '{% extends "pages/base.html" %}{% block content %}'
        "<p>Sign in at the counter, {{ brand.name }}.</p>{% endblock %}"
    )
    (tmp_path / "email" / "conversion_setup.subject.txt").write_text(
        "{% if lang == 'de' %}Willkommen{% else %}Welcome{% endif %} at {{ brand.name }}"
    )
    (tmp_path / "admin" / "signin.html").write_text("<!doctype html><title>Our own door</title>")
    app, _ = await app_with(templates_dir=tmp_path, brand_name="Teapot & Co")
    async with bare_client(app) as browser:
        login = await browser.get("/account/login")
        assert "Sign in at the counter, Teapot &amp; Co." in login.text
        assert (
            'name="password"' not in login.text and "<title>Log in · Teapot &amp; Co" in login.text
        )
        reset = await browser.get("/account/reset")  # not replaced: the shipped one
        assert "Send the link" in reset.text
        assert (
            await browser.get("/admin/signin")
        ).text == "<!doctype html><title>Our own door</title>"

        email = fresh_email("replaced")
        await new_guest(browser)
        await browser.post(
            "/v1/me/conversion", json={"email": email}, headers={"Accept-Language": "de"}
        )
    [sent] = await outbox_emails(engine, email)
    assert sent["subject"] == "Willkommen at Teapot & Co"
    assert "Hallo," in sent["text"]  # the body is still the shipped, translated one
    assert (SHIPPED / "pages" / "login.html").exists()
