"""Settings: defaults of CONTRACT §3, derived values, and refusals of unsafe combinations."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings, SettingsError, load_settings


def _settings(**values) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_defaults_follow_the_contract() -> None:
    s = _settings()
    assert s.embedded and s.should_auto_migrate
    assert s.data_dir == Path(".anonid")
    assert s.cookie_name == "anonid_session" and s.cookie_secure is True
    assert (s.anonymous_ttl_days, s.session_ttl_days, s.cull_after_days) == (30, 14, 40)
    assert s.jwt_issuer == "http://localhost:8000" and s.audience == "anonid"
    assert s.origins == ["http://localhost:8000"]
    assert s.link(s.setup_url, "T") == "http://localhost:8000/account/setup?token=T"
    assert s.link(s.reset_url, "T") == "http://localhost:8000/account/reset?token=T"


def test_external_database_does_not_auto_migrate_by_default() -> None:
    s = _settings(database_url="postgresql://db/x")
    assert not s.embedded and not s.should_auto_migrate
    assert _settings(database_url="postgresql://db/x", auto_migrate=True).should_auto_migrate


def test_settings_are_read_from_environment_and_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("ANONID_COOKIE_NAME=from_dotenv\nANONID_AUDIENCE=dotenv\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANONID_AUDIENCE", "from_env")
    s = load_settings()
    assert s.cookie_name == "from_dotenv" and s.audience == "from_env"


@pytest.mark.parametrize(
    ("values", "mentions"),
    [
        ({"cull_after_days": 30, "anonymous_ttl_days": 30}, "ANONID_CULL_AFTER_DAYS"),
        ({"cull_after_days": 10}, "ANONID_CULL_AFTER_DAYS"),
        ({"public_url": "localhost:8000"}, "ANONID_PUBLIC_URL"),
        ({"setup_url": "https://x/setup"}, "ANONID_SETUP_URL"),
        ({"smtp_url": "http://mail"}, "ANONID_SMTP_URL"),
        ({"database_url": "mysql://x"}, "ANONID_DATABASE_URL"),
        ({"rate_limit_storage": "memcached://x"}, "ANONID_RATE_LIMIT_STORAGE"),
        ({"login_rate_limit": "lots"}, "ANONID_LOGIN_RATE_LIMIT"),
        ({"data_rate_limit": "often"}, "ANONID_DATA_RATE_LIMIT"),
        ({"webhook_urls": "https://hooks.example"}, "ANONID_WEBHOOK_SECRET"),
        ({"webhook_urls": "https://h.example", "webhook_secret": "nope"}, "whsec_"),
        ({"trusted_proxies": "not-an-ip"}, "ANONID_TRUSTED_PROXIES"),
        ({"log_format": "xml"}, "ANONID_LOG_FORMAT"),
        ({"password_min_length": 200}, "ANONID_PASSWORD_MIN_LENGTH"),
        ({"webauthn_rp_id": "https://example.com"}, "ANONID_WEBAUTHN_RP_ID"),
        ({"webauthn_rp_id": "example.com:443"}, "ANONID_WEBAUTHN_RP_ID"),
        ({"webauthn_origins": "example.com"}, "ANONID_WEBAUTHN_ORIGINS"),
        ({"webauthn_origins": "https://app.example/path"}, "ANONID_WEBAUTHN_ORIGINS"),
    ],
)
def test_unsafe_or_invalid_settings_are_refused_with_one_line(
    values: dict, mentions: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError) as info:
        load_settings(**values)
    message = str(info.value)
    assert "\n" not in message and mentions in message


def test_allowed_origins_always_include_public_url_for_csrf() -> None:
    s = _settings(public_url="https://id.example/", allowed_origins="https://shop.example/")
    assert s.public_url == "https://id.example"
    assert s.origins == ["https://shop.example"]
    assert s.csrf_origins == {"https://shop.example", "https://id.example"}


def test_passkeys_default_to_the_public_url_the_brand_and_the_allowed_origins() -> None:
    s = _settings(
        public_url="https://id.shop.example:8443/auth",
        allowed_origins="https://www.shop.example,https://m.shop.example/",
        brand_name="Corner Shop",
    )
    assert s.rp_id == "id.shop.example" and s.rp_name == "Corner Shop"
    assert s.webauthn_origin_list == [
        "https://id.shop.example:8443",
        "https://www.shop.example",
        "https://m.shop.example",
    ]
    assert s.passkeys_offered
    assert _settings().rp_id == "localhost" and _settings().rp_name == "anonid"


def test_passkey_settings_named_explicitly_win() -> None:
    s = _settings(
        public_url="https://id.shop.example",
        webauthn_rp_id="Shop.Example",
        webauthn_rp_name="The Shop",
        webauthn_origins="https://www.shop.example, https://id.shop.example/",
    )
    assert (s.rp_id, s.rp_name) == ("shop.example", "The Shop")
    assert s.webauthn_origin_list == ["https://www.shop.example", "https://id.shop.example"]


def test_no_passkeys_are_offered_where_the_rp_id_is_an_ip_address() -> None:
    assert not _settings(public_url="http://127.0.0.1:8000").passkeys_offered
    assert not _settings(public_url="http://[::1]:8000").passkeys_offered
