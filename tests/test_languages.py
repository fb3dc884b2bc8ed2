"""Languages: en, de, fr and es for every email and hosted page (CONTRACT §15). Pages follow
``?lang=`` then ``Accept-Language``; an email speaks the language of the request that caused it
and the outbox row keeps it; the API's error messages stay English; the catalogs are complete."""

from __future__ import annotations

import re
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from babel.messages.frontend import CommandLineInterface
from babel.messages.pofile import read_po
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.outbox.enqueue import EMAIL_KINDS, render_email
from app.outbox.mail import message_bytes
from app.platform.catcher import CATCHER_DIR_ENV
from app.platform.i18n import LANGUAGES, LOCALES, catalog_path, negotiate, speaking, translations
from tests.account_support import (
    PASSWORD,
    bare_client,
    fresh_email,
    last_token,
    new_guest,
    outbox_emails,
    register,
)
from tests.conftest import AppFactory, make_settings

GERMAN = {"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"}
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')
ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


@pytest.mark.parametrize(
    ("accept", "asked", "expected"),
    [
        (None, None, "en"),
        ("de", None, "de"),
        ("de-AT", None, "de"),
        ("fr-CA,fr;q=0.9", None, "fr"),
        ("ja,es;q=0.8,de;q=0.7", None, "es"),  # the best one anonid speaks
        ("de;q=0.3,fr;q=0.9", None, "fr"),  # quality, not order
        ("en;q=0,de", None, "de"),  # q=0 means "not this one"
        ("ja, zh", None, "en"),  # none spoken: the default
        ("*", None, "en"),
        ("de;q=abc, es", None, "es"),  # a broken quality counts as 0
        ("de", "fr", "fr"),  # ?lang= wins
        ("de", "pt", "de"),  # ?lang= that anonid does not speak is ignored
        ("de", "ES", "es"),
        ("x" * 5000 + ",de", None, "en"),  # only the header's first kilobyte is read
    ],
)
def test_the_language_is_asked_then_accepted_then_the_default(
    accept: str | None, asked: str | None, expected: str
) -> None:
    assert negotiate(accept, asked, "en") == expected


def test_outside_a_request_an_email_speaks_the_default_language(database_url: str) -> None:
    settings = make_settings(database_url, default_locale="es")
    payload = render_email(
        settings, "password_changed", "a@example.org", {"reset_request_url": "u"}
    )
    assert payload["language"] == "es" and payload["subject"] == "Se ha cambiado tu contraseña"
    with speaking({"type": "http", "headers": [(b"accept-language", b"fr")], "query_string": b""}):
        inside = render_email(
            settings, "password_changed", "a@example.org", {"reset_request_url": "u"}
        )
    assert inside["language"] == "fr" and inside["subject"] == "Votre mot de passe a été modifié"


async def test_a_german_request_gets_a_german_conversion_email_and_setup_page(
    app: FastAPI, engine: AsyncEngine
) -> None:
    email = fresh_email("deutsch")
    async with bare_client(app) as browser:
        await new_guest(browser)
        r = await browser.post("/v1/me/conversion", json={"email": email}, headers=GERMAN)
        assert r.status_code == 202
    [sent] = await outbox_emails(engine, email, "conversion_setup")
    assert sent["subject"] == "Wählen Sie ein Passwort, um Ihr Konto zu behalten"
    assert "Hallo," in sent["text"] and "Der Link funktioniert nur einmal" in sent["text"]
    assert "läuft in 24 Stunden ab" in sent["html"] and '<html lang="de">' in sent["html"]
    async with engine.connect() as conn:
        locale = await conn.scalar(
            sa.text("SELECT locale FROM outbox WHERE payload->>'to' = :to"), {"to": email}
        )
    assert locale == "de"
    assert b"Content-Language: de" in message_bytes(sent)

    token = await last_token(engine, email, "conversion_setup")
    async with bare_client(app) as browser:
        page = await browser.get(f"/account/setup?token={token}", headers=GERMAN)
        assert page.status_code == 200 and page.headers["content-language"] == "de"
        assert '<html lang="de">' in page.text
        for german in ("Passwort wählen", "Neues Passwort", "Dasselbe Passwort noch einmal"):
            assert german in page.text
        assert "Choose your password" not in page.text

        # A refusal on the page is German too; the API says the same in English.
        form = {"csrf": CSRF_FIELD.search(page.text).group(1), "token": token}  # type: ignore[union-attr]
        short = await browser.post(
            "/account/setup",
            data={**form, "password": "kurz", "password_again": "kurz"},
            headers=GERMAN,
        )
        assert short.status_code == 422
        assert "Das Passwort ist zu kurz: Verwenden Sie mindestens 8 Zeichen." in short.text
        api = await browser.post(
            "/v1/password-setup", json={"token": token, "password": "kurz"}, headers=GERMAN
        )
        assert api.json() == {
            "error": "weak_password",
            "message": "The password is too short: use at least 8 characters.",
        }


async def test_api_error_messages_stay_english_whatever_the_language(app: FastAPI) -> None:
    async with bare_client(app) as client:
        for headers in (GERMAN, {"Accept-Language": "fr"}):
            r = await client.post(
                "/v1/login?lang=es",
                json={"email": fresh_email(), "password": PASSWORD},
                headers=headers,
            )
            assert r.status_code == 401
            assert r.json()["message"] == "The email address or password is not correct."


async def test_lang_in_the_query_wins_and_the_form_carries_it_to_the_email(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as person:
        account = await register(person, engine)
    async with bare_client(app) as browser:
        page = await browser.get("/account/reset?lang=es", headers=GERMAN)
        assert '<html lang="es">' in page.text and "Restablece tu contraseña" in page.text
        assert 'action="/account/reset?lang=es"' in page.text
        csrf = CSRF_FIELD.search(page.text).group(1)  # type: ignore[union-attr]
        sent = await browser.post(
            "/account/reset?lang=es", data={"csrf": csrf, "email": account["email"]}, headers=GERMAN
        )
        assert sent.status_code == 200
        assert "ya va de camino un enlace" in sent.text
    [reset] = await outbox_emails(engine, account["email"], "password_reset")
    assert reset["language"] == "es" and reset["subject"] == "Restablece tu contraseña"
    assert "caduca en 60 minutos" in reset["text"]


async def test_every_page_links_to_itself_in_every_language(app: FastAPI) -> None:
    async with bare_client(app) as browser:
        page = await browser.get("/account/login?lang=fr")
    assert "Se connecter" in page.text and "Mot de passe oublié\u00a0?" in page.text
    links = dict(re.findall(r'<a href="\?([^"]+)" hreflang="(\w+)"', page.text))
    assert sorted(links.values()) == sorted(LANGUAGES)
    assert 'hreflang="fr" lang="fr" aria-current="page"' in page.text


async def test_the_default_locale_serves_requests_that_name_no_language_anonid_speaks(
    app_with: AppFactory,
) -> None:
    _, client = await app_with(default_locale="fr")
    page = await client.get("/account/login", headers={"Accept-Language": "ja"})
    assert '<html lang="fr">' in page.text and "Se connecter" in page.text
    english = await client.get("/account/login", headers={"Accept-Language": "en-GB"})
    assert '<html lang="en">' in english.text


async def test_dev_mail_page_speaks_the_visitor_language(
    app_with: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CATCHER_DIR_ENV, str(tmp_path))  # as serve sets it for its catcher
    _, client = await app_with()
    page = await client.get("/dev/mail", headers={"Accept-Language": "es"})
    assert page.status_code == 200 and page.headers["content-language"] == "es"
    assert "Correo capturado" in page.text and '<html lang="es">' in page.text


# The catalogs


def _extracted(tmp_path: Path) -> set[Any]:
    out = tmp_path / "fresh.pot"
    CommandLineInterface().run(
        [
            "pybabel",
            "-q",
            "extract",
            "-F",
            str(LOCALES / "babel.cfg"),
            "--no-location",
            "-o",
            str(out),
            str(ROOT),
        ]
    )
    with out.open("rb") as f:
        return {m.id for m in read_po(f) if m.id}


def test_the_catalog_template_holds_every_message_of_the_code_and_templates(
    tmp_path: Path,
) -> None:
    with (LOCALES / "messages.pot").open("rb") as f:
        committed = {m.id for m in read_po(f) if m.id}
    assert _extracted(tmp_path) == committed, "run the catalog commands of README.md, Languages"


@pytest.mark.parametrize("lang", [lang for lang in LANGUAGES if lang != "en"])
def test_every_message_is_translated_keeping_its_placeholders(lang: str) -> None:
    with (LOCALES / "messages.pot").open("rb") as f:
        wanted = {m.id for m in read_po(f) if m.id}
    with catalog_path(lang).open("rb") as f:
        catalog = read_po(f, locale=lang)
    messages = [m for m in catalog if m.id]
    assert {m.id for m in messages} == wanted
    for message in messages:
        assert not message.fuzzy, message.id
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(strings), (lang, message.id)
        assert len(strings) == catalog.num_plurals or not isinstance(message.id, tuple)
        for text in strings:
            assert set(PLACEHOLDER.findall(text)) == set(PLACEHOLDER.findall(ids[-1])), text
            assert text not in ids or len(text) < 12, (lang, text)  # translated, not copied
    assert translations(lang).gettext("Log in") != "Log in"


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("kind", EMAIL_KINDS)
def test_every_email_kind_renders_in_every_language(
    kind: str, lang: str, database_url: str
) -> None:
    context = {"link": "https://x.test/l?token=t", "ttl_hours": 24, "ttl_minutes": 60}
    context |= {"login_url": "https://x.test/login", "reset_request_url": "https://x.test/r"}
    context |= {"code": "123456", "code_ttl_minutes": 10, "new_email": "n@example.org"}
    payload = render_email(make_settings(database_url), kind, "a@example.org", context, lang)
    assert payload["subject"] and payload["text"] and payload["language"] == lang
    assert f'<html lang="{lang}">' in payload["html"]
    english = render_email(make_settings(database_url), kind, "a@example.org", context, "en")
    assert (payload["subject"] == english["subject"]) == (lang == "en")


async def test_an_email_queued_through_a_hosted_form_keeps_the_language_in_its_row(
    app: FastAPI, engine: AsyncEngine
) -> None:
    async with bare_client(app) as person:
        account = await register(person, engine)
    async with bare_client(app) as browser:
        page = await browser.get("/account/reset", headers={"Accept-Language": "fr"})
        csrf = CSRF_FIELD.search(page.text).group(1)  # type: ignore[union-attr]
        r = await browser.post(
            "/account/reset",
            data={"csrf": csrf, "email": account["email"]},
            headers={"Accept-Language": "fr"},
        )
        assert r.status_code == 200
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT locale, payload->>'subject' AS subject FROM outbox"
                    " WHERE payload->>'to' = :to AND payload->>'email_kind' = 'password_reset'"
                ),
                {"to": account["email"]},
            )
        ).one()
    assert row.locale == "fr" and row.subject == "Réinitialisez votre mot de passe"


async def test_the_request_language_never_leaks_into_the_next_request(app: FastAPI) -> None:
    async with bare_client(app) as client:
        await client.get("/account/login", headers=GERMAN)
        plain = await client.get("/account/login")
    assert '<html lang="en">' in plain.text
    payload = render_email(
        app.state.services.settings, "password_changed", "a@example.org", {"reset_request_url": "u"}
    )
    assert payload["language"] == "en"


async def test_the_message_id_and_parts_survive_translation(database_url: str) -> None:
    payload = render_email(
        make_settings(database_url),
        "password_reset",
        "a@example.org",
        {"link": "https://x.test/r?token=t", "ttl_minutes": 5},
        "de",
    )
    msg = message_from_bytes(message_bytes(payload))
    assert msg["Content-Language"] == "de" and msg["Message-ID"] == payload["message_id"]
    text, html = (part.get_payload(decode=True).decode() for part in msg.get_payload())  # type: ignore[union-attr]
    assert "https://x.test/r?token=t" in text and "https://x.test/r?token=t" in html
    assert "Minuten" in text
