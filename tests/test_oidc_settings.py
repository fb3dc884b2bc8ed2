"""Provider settings (CONTRACT §3), the ``return_to`` rule (§13) and the hosted login page's
buttons (§15)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from app.api.return_to import check_return_to, with_error
from app.errors import AnonidError
from app.settings import SettingsError, load_settings
from tests.conftest import make_settings
from tests.oidc_app import browser, oidc_app, provider

__all__ = ["oidc_app", "provider"]

SETTINGS = make_settings(
    "postgresql://x@127.0.0.1/x",
    public_url="https://id.example.com/auth",
    allowed_origins="https://shop.example.com, http://localhost:3000",
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "https://shop.example.com/"),
        ("", "https://shop.example.com/"),
        ("https://shop.example.com/cart?x=1#top", "https://shop.example.com/cart?x=1#top"),
        ("HTTPS://Shop.Example.COM/", "https://shop.example.com/"),
        ("https://shop.example.com:443/a", "https://shop.example.com/a"),
        ("https://shop.example.com", "https://shop.example.com/"),
        ("http://localhost:3000/back", "http://localhost:3000/back"),
        ("https://id.example.com/anything", "https://id.example.com/anything"),
        ("/account/security", "https://id.example.com/auth/account/security"),
    ],
)
def test_return_to_on_the_public_url_or_an_allowed_origin_is_accepted(
    given: str | None, expected: str
) -> None:
    assert check_return_to(given, SETTINGS) == expected


@pytest.mark.parametrize(
    "given",
    [
        "https://evil.example.com/",
        "//evil.example.com",
        "///evil.example.com",
        "/\\evil.example.com",
        "https://shop.example.com.evil.com/",
        "https://evilshop.example.com/",
        "https://shop.example.com@evil.com/",
        "https://evil.com#@shop.example.com",
        "https://evil.com?@shop.example.com/",
        "https://user@shop.example.com/",
        "https://evil.com\\@shop.example.com/",
        "https:/\\evil.com",
        "https:shop.example.com",
        "http://shop.example.com/",
        "https://shop.example.com:8443/",
        "https://shop.example.com:99999/",
        "http://localhost:3001/",
        "javascript://shop.example.com/%0aalert(1)",
        "data:text/html,<script>alert(1)</script>",
        "https://shop.example.com/\nSet-Cookie:x=1",
        " https://shop.example.com/",
        "https://shöp.example.com/",
        "https://shop.example.com/" + "a" * 3000,
    ],
)
def test_return_to_anywhere_else_is_refused(given: str) -> None:
    with pytest.raises(AnonidError) as refused:
        check_return_to(given, SETTINGS)
    assert refused.value.code == "invalid_return_to"


def test_an_error_is_added_to_return_to_keeping_its_query_and_fragment() -> None:
    assert with_error("https://a.test/", "access_denied") == "https://a.test/?error=access_denied"
    assert (
        with_error("https://a.test/p?x=1&error=old#frag", "invalid_state")
        == "https://a.test/p?x=1&error=invalid_state#frag"
    )


def _load(monkeypatch: pytest.MonkeyPatch, **env: str) -> object:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(_env_file=None)


def test_providers_are_read_from_their_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _load(
        monkeypatch,
        ANONID_OIDC_PROVIDERS="google,my-idp",
        ANONID_OIDC_GOOGLE_ISSUER="https://accounts.google.com",
        ANONID_OIDC_GOOGLE_CLIENT_ID="id.apps.googleusercontent.com",
        ANONID_OIDC_GOOGLE_CLIENT_SECRET="s3cret",
        ANONID_OIDC_MY_IDP_ISSUER="http://127.0.0.1:8080/realms/shop",
        ANONID_OIDC_MY_IDP_CLIENT_ID="anonid",
        ANONID_OIDC_MY_IDP_SCOPES="openid email",
        ANONID_OIDC_MY_IDP_TRUST_EMAIL="true",
    )
    google = settings.oidc_provider_map["google"]  # type: ignore[attr-defined]
    idp = settings.oidc_provider_map["my-idp"]  # type: ignore[attr-defined]
    assert (google.issuer, google.client_secret, google.scopes, google.trust_email) == (
        "https://accounts.google.com",
        "s3cret",
        "openid email profile",
        False,
    )
    assert (idp.scopes, idp.trust_email, idp.label) == ("openid email", True, "My Idp")
    assert settings.oauth_redirect_uri("google") == (  # type: ignore[attr-defined]
        "http://localhost:8000/v1/oauth/google/callback"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ANONID_OIDC_PROVIDERS": "Google"}, "is not a provider name"),
        (
            {"ANONID_OIDC_PROVIDERS": "op"},
            "needs ANONID_OIDC_OP_ISSUER and ANONID_OIDC_OP_CLIENT_ID",
        ),
        (
            {
                "ANONID_OIDC_PROVIDERS": "op",
                "ANONID_OIDC_OP_ISSUER": "http://idp.example.com",
                "ANONID_OIDC_OP_CLIENT_ID": "x",
            },
            "http is accepted on loopback hosts only",
        ),
        (
            {
                "ANONID_OIDC_PROVIDERS": "op",
                "ANONID_OIDC_OP_ISSUER": "https://idp.example.com",
                "ANONID_OIDC_OP_CLIENT_ID": "x",
                "ANONID_OIDC_OP_SCOPES": "email",
            },
            "must include openid",
        ),
    ],
)
def test_an_incomplete_or_unsafe_provider_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        _load(monkeypatch, **env)


async def test_the_hosted_login_page_has_a_button_per_provider(oidc_app: FastAPI) -> None:
    async with browser(oidc_app) as c:
        page = await c.get("/account/login")
    assert page.status_code == 200
    for name, label in (("op", "Op"), ("trusted", "Trusted"), ("op-post", "Op Post")):
        assert f'href="/v1/oauth/{name}/authorize">Continue with {label}</a>' in page.text


async def test_the_login_page_without_providers_has_no_buttons(app: FastAPI) -> None:
    async with browser(app) as c:
        page = await c.get("/account/login")
    assert "Continue with" not in page.text
