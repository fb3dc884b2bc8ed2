"""One normal form of addresses for limits, lookups, uniqueness and storage (finding 6).

The attack: ``İ`` (U+0130) is ``i`` to PostgreSQL's ``lower()`` under glibc and ``i̇`` to
Python's, so ``alİce@example.com`` was alice's account to the lookups and a fresh address to the
rate limiter. Every test here goes through the API against the real database.
"""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.lifecycle.addresses import email_key, parse_email
from tests.account_support import PASSWORD, fresh_email, outbox_emails, register
from tests.conftest import AppFactory, client_for
from tests.mailserver import MailServer

ADMIN_KEY = "addresses-admin-key-0123456789abcdef"
DOTTED = "\u0130"  # İ, LATIN CAPITAL LETTER I WITH DOT ABOVE


def dotted(email: str) -> str:
    """alice-…@… spelled with a dotted capital I: alİce-…@…"""
    assert email.startswith("ali")
    return "al" + DOTTED + email[3:]


def from_ip(n: int) -> dict[str, str]:
    """A different client address per request (behind the trusted proxy 127.0.0.1)."""
    return {"X-Forwarded-For": f"198.51.100.{n}"}


async def login(
    c: httpx.AsyncClient, email: str, n: int, password: str = PASSWORD
) -> httpx.Response:
    c.cookies.clear()
    return await c.post(
        "/v1/login", json={"email": email, "password": password}, headers=from_ip(n)
    )


async def test_dotted_capital_i_does_not_log_in_as_alice(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    alice = await register(client, engine, fresh_email("alice"))
    r = await login(client, dotted(alice["email"]), 1)
    assert r.status_code == 401 and r.json()["error"] == "invalid_credentials", r.text
    r = await login(client, alice["email"], 2)
    assert r.status_code == 200 and r.json()["user"]["id"] == alice["id"]


async def test_dotted_capital_i_does_not_escape_alices_rate_limit_bucket(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    # The per-IP limit is out of the way (one IP per request): only the per-address one counts.
    _, c = await app_with(login_rate_limit="3/minute", trusted_proxies="127.0.0.1/32")
    alice = await register(c, engine, fresh_email("alice"))
    # register() asked for the conversion (one hit); wrong guesses use up the rest.
    statuses = [
        (await login(c, alice["email"], n, "wrong password!")).status_code for n in range(3)
    ]
    assert statuses == [401, 401, 429]
    assert (await login(c, alice["email"], 10)).status_code == 429
    # Alice's bucket is spent; her password under the dotted spelling does not reach her account.
    r = await login(c, dotted(alice["email"]), 11)
    assert r.status_code == 401 and r.json()["error"] == "invalid_credentials", r.text


async def test_dotted_capital_i_password_reset_does_not_mail_alice(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    alice = await register(client, engine, fresh_email("alice"))
    r = await client.post("/v1/password-reset", json={"email": dotted(alice["email"])})
    assert r.status_code == 202
    assert await outbox_emails(engine, alice["email"], "password_reset") == []
    r = await client.post("/v1/password-reset", json={"email": alice["email"].upper()})
    assert r.status_code == 202
    assert len(await outbox_emails(engine, alice["email"], "password_reset")) == 1


async def test_case_and_u_label_or_a_label_spellings_share_one_rate_limit_bucket(
    app_with: AppFactory, engine: AsyncEngine
) -> None:
    _, c = await app_with(login_rate_limit="3/minute", trusted_proxies="127.0.0.1/32")
    local = fresh_email("bob").split("@")[0]
    spellings = [
        f"{local}@bücher.example",
        f"{local.upper()}@BÜCHER.EXAMPLE",
        f"{local}@xn--bcher-kva.example",
        f"{local}@bu\u0308cher.example",  # NFD
    ]
    for n, spelling in enumerate(spellings[:3]):
        assert (await login(c, spelling, n, "wrong password!")).status_code == 401
    for n, spelling in enumerate(spellings, start=10):
        r = await login(c, spelling, n)
        assert r.status_code == 429, (spelling, r.text)


@pytest.fixture
def smtputf8_server() -> Iterator[MailServer]:
    with MailServer(smtputf8=True) as server:
        yield server


async def test_case_nfc_nfd_and_u_label_or_a_label_spellings_are_one_account(
    app_with: AppFactory, engine: AsyncEngine, smtputf8_server: MailServer
) -> None:
    app, c = await app_with(smtp_url=smtputf8_server.url, admin_api_key=ADMIN_KEY)
    tag = fresh_email("x").split("@")[0][2:]
    typed = f"Jose\u0301-{tag}@Bücher.Example"  # NFD local part, capitals, U-label domain
    normal = f"jos\u00e9-{tag}@xn--bcher-kva.example"
    owner = await register(c, engine, typed)
    assert owner["email"] == normal
    for n, spelling in enumerate(
        [
            normal,
            f"JOS\u00c9-{tag.upper()}@BÜCHER.EXAMPLE",
            f"jose\u0301-{tag}@xn--bcher-kva.example",
            f"jos\u00e9-{tag}@bu\u0308cher.example",
        ]
    ):
        r = await login(c, spelling, n)
        assert r.status_code == 200 and r.json()["user"]["id"] == owner["id"], spelling

    # Another guest asking for a spelling of it gets no link: the owner is told instead.
    async with client_for(app) as other:
        await other.post("/v1/anonymous")
        r = await other.post("/v1/me/conversion", json={"email": f"JOSÉ-{tag}@bücher.example"})
        assert r.status_code == 202 and r.json()["pending_email"] == normal
    assert len(await outbox_emails(engine, normal, "conversion_already_registered")) == 1

    # The admin filter is the same exact, case-insensitive match.
    r = await c.get(
        "/v1/admin/users",
        params={"email": f"JOSE\u0301-{tag.upper()}@BÜCHER.example"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert [u["id"] for u in r.json()["users"]] == [owner["id"]]
    async with engine.connect() as conn:
        stored = await conn.scalar(
            sa.text("SELECT count(*) FROM users WHERE email = :e"), {"e": normal}
        )
    assert stored == 1


def test_normal_form_is_stable_for_every_code_point_alone_and_before_a_combining_mark() -> None:
    unstable = []
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        for local in (chr(cp), chr(cp) + "\u0307"):
            key = email_key(f"{local}@example.org")
            if email_key(key) != key:
                unstable.append(hex(cp))
    assert unstable == []


def test_normal_form_examples() -> None:
    assert email_key(" Alice@Example.COM ") == "alice@example.com"
    assert email_key("al\u0130ce@example.com") == "ali\u0307ce@example.com"
    assert email_key("\u212a@example.com") == "k@example.com"  # KELVIN SIGN is K under NFC
    assert parse_email("ALICE@BÜCHER.DE") == "alice@xn--bcher-kva.de"
    assert parse_email("e\u0301@x.example") == unicodedata.normalize("NFC", "é@x.example")
    assert email_key("a@" + "x" * 5000) == "\x00"  # never normalised, matches nothing
