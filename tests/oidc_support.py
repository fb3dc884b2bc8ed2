"""A real OpenID Provider for the tests, and a browser-like httpx client that signs in through it.

The provider is the npm package ``oidc-provider`` (pinned in ``tests/oidc/package-lock.json``,
installed with ``npm ci`` on first use, as ``tests/browser.py`` installs chromium), run by
``tests/oidc/provider.mjs`` on a loopback port with the client, keys and lifetimes the test
chooses. Its login and consent pages are its own; ``drive`` fills them in as a person would and
follows every redirect until the provider sends the browser back to anonid's callback.

Logins decide the account's address (``provider.mjs``): ``v-…`` has a verified address
``v-…@example.com``, ``u-…`` an unverified one, anything else none.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpx
import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy.ext.asyncio import AsyncEngine

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
CLIENT_ID = "anonid-tests"
CLIENT_SECRET = "a-client-secret-of-the-tests-" + "0123456789"


def ensure_node_modules() -> None:
    """``npm ci`` in ``tests/oidc`` when its ``node_modules`` is missing (exact pinned versions)."""
    if (OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("these tests need Node.js and npm (the OpenID Provider runs on Node)")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=OIDC_DIR,
        check=True,
        capture_output=True,
        timeout=600,
    )


def new_signing_key(kid: str | None = None) -> dict[str, Any]:
    """A private RS256 JWK (what the provider signs with; the test can sign with it too)."""
    key = RSAKey.generate_key(
        2048, parameters={"kid": kid or secrets.token_hex(8), "use": "sig", "alg": "RS256"}
    )
    return key.as_dict(private=True)


def login_name(kind: str = "v") -> str:
    """A fresh provider login: ``v`` verified address, ``u`` unverified, ``n`` none."""
    return f"{kind}-{secrets.token_hex(6)}"


@dataclass
class Provider:
    """``oidc-provider`` on ``127.0.0.1:port``; ``restart`` swaps its keys (a rotation)."""

    workdir: Path
    port: int
    redirect_uris: list[str]
    keys: list[dict[str, Any]] = field(default_factory=lambda: [new_signing_key()])
    id_token_ttl: int = 3600
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        config = {
            "issuer": self.issuer,
            "host": "127.0.0.1",
            "port": self.port,
            "cookie_key": secrets.token_hex(16),
            "id_token_ttl": self.id_token_ttl,
            "jwks": {"keys": self.keys},
            "clients": [
                {
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "redirect_uris": self.redirect_uris,
                    "response_types": ["code"],
                    "grant_types": ["authorization_code"],
                    "token_endpoint_auth_method": "client_secret_basic",
                }
            ],
        }
        path = self.workdir / f"provider-{self.port}.json"
        path.write_text(json.dumps(config))
        return path

    def start(self) -> Provider:
        ensure_node_modules()
        config = self._write_config()
        log = (self.workdir / f"provider-{self.port}.log").open("ab")
        self._proc = subprocess.Popen(
            ["node", str(OIDC_DIR / "provider.mjs"), str(config)],
            cwd=OIDC_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise AssertionError(f"the provider exited: {self.log_text()}")
            try:
                r = httpx.get(self.issuer + "/.well-known/openid-configuration", timeout=2)
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the provider did not answer: {self.log_text()}")

    def log_text(self) -> str:
        return (self.workdir / f"provider-{self.port}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def restart(self, keys: list[dict[str, Any]]) -> None:
        """The same provider with another key set (a key rotation, or a wrong key)."""
        self.stop()
        self.keys = keys
        self.start()

    def jwks_fetches(self) -> int:
        return int(httpx.get(self.issuer + "/__test/stats", timeout=5).json()["jwks_fetches"])

    def sign(self, claims: dict[str, Any], key: dict[str, Any] | None = None, **header: Any) -> str:
        """An ID token signed with the provider's current key (or ``key``)."""
        jwk = key or self.keys[0]
        private = RSAKey.import_key(jwk)
        return jwt.encode({"alg": "RS256", "kid": jwk["kid"], **header}, claims, private)

    def id_token_claims(self, subject: str, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "sub": subject,
            "iat": now,
            "exp": now + 600,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}


class _Forms(HTMLParser):
    """The forms of a page: action, method and every named input's value; and the links."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append(
                {
                    "action": a.get("action") or "",
                    "method": (a.get("method") or "get"),
                    "fields": {},
                }
            )
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value") or ""
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")


def _forms(html: str) -> _Forms:
    parser = _Forms()
    parser.feed(html)
    return parser


def rewrite_query(url: str, **changes: str) -> str:
    """``url`` with some query parameters replaced (to tamper with an authorization request)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


async def drive(
    client: httpx.AsyncClient,
    first: httpx.Response,
    login: str,
    *,
    callback_prefix: str = "https://anonid.test/v1/oauth/",
    cancel: bool = False,
    stop_at_callback: bool = False,
    tamper: Callable[[str], str] | None = None,
) -> httpx.Response:
    """Follow ``first`` (anonid's redirect to the provider) as a browser: every redirect, the
    provider's login form (``login``, any password) and its consent form, until the provider
    sends the browser to anonid's callback; returns the callback's answer (not followed).

    ``cancel`` presses the provider's "Cancel" instead of consenting; ``tamper`` rewrites the
    authorization request on its way to the provider; ``stop_at_callback`` returns the redirect
    to the callback without calling it (its URL is then ``callback_url(response)``).
    """
    r = first
    for _ in range(30):
        if r.is_redirect:
            url = urljoin(str(r.url), r.headers["location"])
            if url.startswith(callback_prefix):
                return r if stop_at_callback else await client.get(url)
            if tamper is not None and "/auth?" in url:
                url, tamper = tamper(url), None
            r = await client.get(url)
            continue
        page = _forms(r.text) if r.status_code == 200 else None
        if page is None or not page.forms:
            raise AssertionError(f"unexpected {r.status_code} at {r.url}: {r.text[:800]}")
        form = page.forms[0]
        action = urljoin(str(r.url), form["action"])
        fields = dict(form["fields"])
        if fields.get("prompt") == "login":
            fields.update(login=login, password="any password")
        elif fields.get("prompt") == "consent" and cancel:
            abort = next(link for link in page.links if "/abort" in link)
            r = await client.get(urljoin(str(r.url), abort))
            continue
        if action.startswith(callback_prefix):  # response_mode=form_post
            if stop_at_callback:
                return r
            return await client.post(action, data=fields)
        r = await client.post(action, data=fields)
    raise AssertionError("the sign-in did not come back to anonid")


def callback_url(response: httpx.Response) -> str:
    return urljoin(str(response.url), response.headers["location"])


async def fingerprint(engine: AsyncEngine) -> dict[str, Any]:
    """Every row of the tables a sign-in may change, hashed: equal before and after means no
    row was added, removed or changed."""
    out: dict[str, Any] = {}
    async with engine.connect() as conn:
        for table in ("users", "identities", "events", "outbox", "link_tokens"):
            out[table] = (
                await conn.execute(
                    sa.text(
                        f"SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) "
                        f"FROM {table} t"
                    )
                )
            ).one()
    return out
