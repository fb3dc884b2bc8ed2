"""Settings: one pydantic-settings class read from ``ANONID_*`` variables and ``.env``.

Unsafe or inconsistent combinations are refused here, at start, with one clear sentence.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from limits import parse_many
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SMTP_SCHEMES = ("smtp", "smtp+starttls", "smtps")


class SettingsError(Exception):
    """Settings that cannot run; the message is one line meant for the operator."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ANONID_", env_file=".env", extra="ignore", frozen=True
    )

    database_url: str | None = None
    # A direct (unpooled) connection for migrations, LISTEN and the cull's lock, when
    # database_url points at a transaction pooler (CONTRACT §12); unset: database_url.
    database_direct_url: str | None = None
    database_pool_size: int = Field(10, ge=1, le=1000)
    data_dir: Path = Path(".anonid")
    smtp_url: str | None = None
    mail_from: str = "anonid <no-reply@localhost>"
    public_url: str = "http://localhost:8000"
    setup_url: str = "{public_url}/account/setup?token={token}"
    reset_url: str = "{public_url}/account/reset?token={token}"
    cookie_name: str = Field("anonid_session", pattern=r"^[A-Za-z0-9_\-.]{1,64}$")
    cookie_secure: bool = True
    cookie_domain: str | None = None
    anonymous_ttl_days: int = Field(30, ge=1, le=3650)
    session_ttl_days: int = Field(14, ge=1, le=3650)
    # CONTRACT §4: the access token's lifetime (a fraction of a minute is accepted, for tests
    # that must see a token expire without waiting minutes), the refresh cookie, the reuse
    # interval of a rotated refresh token and the absolute lifetime of a registered session.
    access_token_ttl_minutes: float = Field(15, gt=0, le=24 * 60)
    refresh_cookie_name: str = Field("anonid_refresh", pattern=r"^[A-Za-z0-9_\-.]{1,64}$")
    refresh_reuse_seconds: int = Field(10, ge=0, le=3600)
    session_max_days: int = Field(90, ge=1, le=3650)
    cull_after_days: int = Field(40, ge=1, le=36500)
    cull_interval_minutes: int = Field(60, ge=0)
    setup_token_ttl_hours: int = Field(24, ge=1, le=24 * 30)
    reset_token_ttl_minutes: int = Field(60, ge=1, le=24 * 60)
    admin_api_key: SecretStr | None = None
    allowed_origins: str | None = None
    rate_limit_storage: str = "memory://"
    anonymous_rate_limit: str = "60/minute"
    login_rate_limit: str = "10/minute"
    data_rate_limit: str = "600/minute"
    trusted_proxies: str | None = None
    dev_mail_public: bool = False
    webhook_urls: str | None = None
    webhook_secret: SecretStr | None = None
    issuer: str | None = None
    audience: str = "anonid"
    merge_on_login: bool = True
    data_max_bytes: int = Field(65536, ge=2, le=16 * 1024 * 1024)
    log_format: Literal["console", "json"] = "console"
    password_min_length: int = Field(8, ge=1, le=128)
    auto_migrate: bool | None = None
    run_worker: bool = True
    event_retention_days: int = Field(400, ge=1, le=36500)
    outbox_retention_days: int = Field(7, ge=1, le=36500)
    # Not in CONTRACT §3: how long a process trusts its cached signing keys before re-reading
    # them (a key rotated elsewhere is used and published within this); tests shorten it.
    key_cache_seconds: int = Field(60, ge=1, le=3600)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as https://id.example.com")
        return v.rstrip("/")

    @field_validator("setup_url", "reset_url")
    @classmethod
    def _link_template(cls, v: str) -> str:
        if "{token}" not in v:
            raise ValueError("must contain {token}")
        return v

    @field_validator("database_url", "database_direct_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        scheme = v.split("://", 1)[0]
        if scheme not in ("postgresql", "postgres", "postgresql+asyncpg"):
            raise ValueError("must start with postgresql://")
        return v

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        parts = urlsplit(v)
        if parts.scheme not in SMTP_SCHEMES or not parts.hostname:
            raise ValueError("must look like smtp://host:port, smtp+starttls://… or smtps://…")
        return v

    @field_validator("rate_limit_storage")
    @classmethod
    def _storage(cls, v: str) -> str:
        if not (v.startswith("memory://") or v.startswith("redis://")):
            raise ValueError("must be memory:// or redis://host:port/db")
        return v

    @field_validator("anonymous_rate_limit", "login_rate_limit", "data_rate_limit")
    @classmethod
    def _rate(cls, v: str) -> str:
        try:
            parse_many(v)
        except ValueError as exc:
            raise ValueError("must be a rate such as 60/minute") from exc
        return v

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: str | None) -> str | None:
        for item in _split(v):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or network") from exc
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.cull_after_days <= self.anonymous_ttl_days:
            raise ValueError(
                f"ANONID_CULL_AFTER_DAYS ({self.cull_after_days}) must be greater than "
                f"ANONID_ANONYMOUS_TTL_DAYS ({self.anonymous_ttl_days}), or live cookies "
                "would point at culled accounts"
            )
        if self.refresh_cookie_name == self.cookie_name:
            raise ValueError(
                "ANONID_REFRESH_COOKIE_NAME must differ from ANONID_COOKIE_NAME "
                f"(both are {self.cookie_name!r})"
            )
        if self.webhook_urls and self.webhook_secret is None:
            raise ValueError("ANONID_WEBHOOK_URLS is set but ANONID_WEBHOOK_SECRET is not")
        if (
            self.webhook_secret is not None
            and not self.webhook_secret.get_secret_value().startswith("whsec_")
        ):
            raise ValueError("ANONID_WEBHOOK_SECRET must start with whsec_")
        for url in _split(self.webhook_urls):
            if urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"ANONID_WEBHOOK_URLS entry {url!r} is not an http(s) URL")
        return self

    # Derived values, computed once per process.

    @cached_property
    def embedded(self) -> bool:
        return self.database_url is None

    @cached_property
    def should_auto_migrate(self) -> bool:
        return self.embedded if self.auto_migrate is None else self.auto_migrate

    @cached_property
    def access_ttl_seconds(self) -> int:
        return max(1, round(self.access_token_ttl_minutes * 60))

    @cached_property
    def jwt_issuer(self) -> str:
        return self.issuer or self.public_url

    @cached_property
    def origins(self) -> list[str]:
        return [o.rstrip("/") for o in _split(self.allowed_origins)] or [_origin(self.public_url)]

    @cached_property
    def csrf_origins(self) -> frozenset[str]:
        """Origins allowed to make cookie-authenticated unsafe requests (the hosted pages too)."""
        return frozenset([*self.origins, _origin(self.public_url)])

    @cached_property
    def proxies(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(p, strict=False) for p in _split(self.trusted_proxies)]

    @cached_property
    def webhook_url_list(self) -> list[str]:
        return _split(self.webhook_urls)

    def link(self, template: str, token: str) -> str:
        return template.replace("{public_url}", self.public_url).replace("{token}", token)


def _split(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning any validation failure into one operator-readable line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        if field:
            raise SettingsError(f"invalid setting ANONID_{field.upper()}: {message}") from None
        raise SettingsError(f"invalid settings: {message}") from None
