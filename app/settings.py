"""Settings: one pydantic-settings class read from ``ANONID_*`` variables and ``.env``.

Unsafe or inconsistent combinations are refused here, at start, with one clear sentence.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from limits import parse_many
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

SMTP_SCHEMES = ("smtp", "smtp+starttls", "smtps")
OIDC_NAME = re.compile(r"^[a-z0-9-]{1,40}$")
OIDC_FIELDS = ("issuer", "client_id", "client_secret", "scopes", "trust_email", "response_mode")
OIDC_PREFIX = "anonid_oidc_"
HOOK_NAMES = ("before_user_created", "custom_claims", "before_merge")


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
    # A one-time email code, and the sign-in and address-change links that travel with one
    # (fractions of a minute too, as for access tokens, so tests can watch one expire).
    email_code_ttl_minutes: float = Field(10, gt=0, le=24 * 60)
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
    # Branding (CONTRACT §15): in every email, hosted page and the console.
    brand_name: str = Field("anonid", min_length=1, max_length=100)
    brand_logo_url: str | None = None
    brand_color: str | None = None
    # A folder whose templates replace the shipped ones of the same relative path
    # (``pages/login.html``, ``email/conversion_setup.html``, ``admin/base.html``…).
    templates_dir: Path | None = None
    default_locale: Literal["en", "de", "fr", "es"] = "en"
    # Not in CONTRACT §3: how long a process trusts its cached signing keys before re-reading
    # them (a key rotated elsewhere is used and published within this); tests shorten it.
    key_cache_seconds: int = Field(60, ge=1, le=3600)
    # OpenID Connect providers (CONTRACT §3, §13): the names, and every ANONID_OIDC_<NAME>_<FIELD>
    # as ``{"<name>_<field>": value}`` (lower case, ``-`` as ``_``), gathered by ``_OidcSource``.
    oidc_providers: str | None = None
    oidc: dict[str, SecretStr] = Field(default_factory=dict)  # secrets among them: never shown
    # Not in CONTRACT §3: the least time between two fetches of a provider's JWKS caused by an
    # unknown ``kid`` (a key rotation is picked up, a flood of made-up kids is not a flood of
    # fetches); tests shorten it.
    oidc_jwks_refresh_seconds: int = Field(30, ge=0, le=3600)
    # Passkeys (CONTRACT §3, §14): unset, the RP id is the host of ANONID_PUBLIC_URL, the name
    # the brand's, and the origins ANONID_PUBLIC_URL's and ANONID_ALLOWED_ORIGINS.
    webauthn_rp_id: str | None = None
    webauthn_rp_name: str | None = Field(None, max_length=100)
    webauthn_origins: str | None = None
    # Abuse protection and synchronous hooks (CONTRACT §3, §16).
    anonymous_challenge: Literal["off", "altcha"] = "off"
    challenge_max_number: int = Field(100000, ge=1, le=10_000_000)
    hook_url: str | None = None
    hook_secret: SecretStr | None = None
    hooks: str | None = None
    hook_timeout_ms: int = Field(2000, ge=1, le=60_000)
    hook_failure: Literal["deny", "allow"] = "deny"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        oidc = _OidcSource(settings_cls, env_settings, dotenv_settings)
        return init_settings, env_settings, dotenv_settings, oidc, file_secret_settings

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

    @field_validator("brand_logo_url")
    @classmethod
    def _logo(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        parts = urlsplit(v)
        # An absolute URL is what mail clients and the pages' Content-Security-Policy can both
        # name; quotes, brackets and spaces could break out of an attribute or a CSP source.
        unsafe = any(c in v for c in "\"'<>; ")
        if parts.scheme not in ("http", "https") or not parts.netloc or unsafe:
            raise ValueError("must be an absolute http(s) URL of an image")
        return v

    @field_validator("brand_color")
    @classmethod
    def _color(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not re.fullmatch(r"#(?:[0-9a-fA-F]{3}){1,2}", v):
            raise ValueError("must be a hex colour such as #2754c5")
        return v.lower()

    @field_validator("templates_dir", mode="before")
    @classmethod
    def _templates_dir(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("templates_dir")
    @classmethod
    def _templates_folder(cls, v: Path | None) -> Path | None:
        if v is None:
            return None
        if not v.is_dir():
            raise ValueError(f"{v} is not a folder")
        return v.resolve()

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

    @field_validator("webauthn_rp_id")
    @classmethod
    def _rp_id(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        host = v.strip().lower()
        # A bare host name (no scheme, port or path): what browsers hash as the RP id.
        if not re.fullmatch(
            r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*", host
        ):
            raise ValueError("must be a host name such as example.com (no scheme, port or path)")
        return host

    @field_validator("webauthn_rp_name")
    @classmethod
    def _rp_name(cls, v: str | None) -> str | None:
        return None if v is None or not v.strip() else v.strip()

    @field_validator("webauthn_origins")
    @classmethod
    def _webauthn_origins(cls, v: str | None) -> str | None:
        for item in _split(v):
            parts = urlsplit(item)
            bare = not (parts.path.strip("/") or parts.query or parts.fragment or parts.username)
            if parts.scheme not in ("http", "https") or not parts.hostname or not bare:
                raise ValueError(f"{item!r} is not an origin such as https://app.example.com")
        return v

    @field_validator("oidc_providers")
    @classmethod
    def _oidc_names(cls, v: str | None) -> str | None:
        names = _split(v)
        for name in names:
            if not OIDC_NAME.match(name):
                raise ValueError(f"{name!r} is not a provider name ([a-z0-9-]+)")
        if len(set(names)) != len(names):
            raise ValueError("names a provider twice")
        return v

    @field_validator("hook_url")
    @classmethod
    def _hook_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http(s) URL")
        return v

    @field_validator("hooks")
    @classmethod
    def _hook_names(cls, v: str | None) -> str | None:
        for name in _split(v):
            if name not in HOOK_NAMES:
                raise ValueError(f"{name!r} is not a hook ({', '.join(HOOK_NAMES)})")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        self.oidc_provider_map  # noqa: B018 (refuses an incomplete or unsafe provider at start)
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
        self._check_hooks()
        return self

    def _check_hooks(self) -> None:
        """A hook is called only with an endpoint and a secret to sign with, and an endpoint is
        never configured for nothing (a forgotten ``ANONID_HOOKS`` would silently skip it)."""
        if _split(self.hooks) and self.hook_url is None:
            raise ValueError("ANONID_HOOKS is set but ANONID_HOOK_URL is not")
        if self.hook_url is not None and not _split(self.hooks):
            raise ValueError(
                f"ANONID_HOOK_URL is set but ANONID_HOOKS names no hook ({', '.join(HOOK_NAMES)})"
            )
        if self.hook_url is not None and self.hook_secret is None:
            raise ValueError("ANONID_HOOK_URL is set but ANONID_HOOK_SECRET is not")
        if self.hook_secret is not None and not self.hook_secret.get_secret_value().startswith(
            "whsec_"
        ):
            raise ValueError("ANONID_HOOK_SECRET must start with whsec_")

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

    @cached_property
    def hook_set(self) -> frozenset[str]:
        """The hooks to call (CONTRACT §16): empty without ``ANONID_HOOK_URL``."""
        return frozenset(_split(self.hooks)) if self.hook_url else frozenset()

    @cached_property
    def oidc_provider_map(self) -> dict[str, OidcProvider]:
        """The configured providers by name, in the order ``ANONID_OIDC_PROVIDERS`` lists them."""
        return {name: _oidc_provider(name, self.oidc) for name in _split(self.oidc_providers)}

    @cached_property
    def rp_id(self) -> str:
        """The WebAuthn relying-party id: ``ANONID_WEBAUTHN_RP_ID``, else the public URL's host."""
        return self.webauthn_rp_id or (urlsplit(self.public_url).hostname or "localhost")

    @cached_property
    def rp_name(self) -> str:
        return self.webauthn_rp_name or self.brand_name

    @cached_property
    def webauthn_origin_list(self) -> list[str]:
        """Origins accepted in WebAuthn responses (``clientDataJSON.origin``)."""
        named = [o.rstrip("/") for o in _split(self.webauthn_origins)]
        return named or list(dict.fromkeys([_origin(self.public_url), *self.origins]))

    @cached_property
    def passkeys_offered(self) -> bool:
        """Whether browsers can use passkeys here: they refuse an IP address as the RP id, so
        the hosted pages offer passkeys only under a host name (``localhost`` on one machine)."""
        try:
            ipaddress.ip_address(self.rp_id.strip("[]"))
        except ValueError:
            return True
        return False

    def oauth_redirect_uri(self, provider: str) -> str:
        """The redirect URI to register at the provider (CONTRACT §13)."""
        return f"{self.public_url}/v1/oauth/{provider}/callback"

    @property
    def email_code_minutes(self) -> int:
        """``ANONID_EMAIL_CODE_TTL_MINUTES`` as an email says it: whole minutes, at least one."""
        return max(1, round(self.email_code_ttl_minutes))

    def link(self, template: str, token: str) -> str:
        return template.replace("{public_url}", self.public_url).replace("{token}", token)


@dataclass(frozen=True, slots=True)
class OidcProvider:
    """One OpenID Connect provider as configured by ``ANONID_OIDC_<NAME>_*``."""

    name: str
    issuer: str
    client_id: str
    client_secret: str | None = field(repr=False)
    scopes: str
    trust_email: bool
    # Not in CONTRACT §3: ``form_post`` for providers that need it (Apple, when asking for the
    # address); the callback accepts both.
    response_mode: Literal["query", "form_post"]

    @property
    def label(self) -> str:
        """The name shown on buttons: ``google`` is "Google", ``my-idp`` is "My Idp"."""
        return " ".join(part.capitalize() for part in self.name.split("-"))


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _oidc_provider(name: str, values: dict[str, SecretStr]) -> OidcProvider:
    key = name.replace("-", "_")
    env = f"ANONID_OIDC_{key.upper()}_"

    def get(field: str) -> str | None:
        secret = values.get(f"{key}_{field}")
        value = secret.get_secret_value().strip() if secret is not None else ""
        return value or None

    issuer, client_id = get("issuer"), get("client_id")
    if issuer is None or client_id is None:
        raise ValueError(f"provider {name!r} needs {env}ISSUER and {env}CLIENT_ID")
    parts = urlsplit(issuer)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{env}ISSUER must be an absolute https URL")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(f"{env}ISSUER must use https (http is accepted on loopback hosts only)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{env}ISSUER must have no query, fragment or user information")
    trust = (get("trust_email") or "false").lower()
    if trust not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise ValueError(f"{env}TRUST_EMAIL must be true or false")
    mode = get("response_mode") or "query"
    if mode not in ("query", "form_post"):
        raise ValueError(f"{env}RESPONSE_MODE must be query or form_post")
    scopes = " ".join((get("scopes") or "openid email profile").replace(",", " ").split())
    if "openid" not in scopes.split():
        raise ValueError(f"{env}SCOPES must include openid")
    return OidcProvider(
        name=name,
        issuer=issuer,
        client_id=client_id,
        client_secret=get("client_secret"),
        scopes=scopes,
        trust_email=trust in ("true", "1", "yes", "on"),
        response_mode=mode,  # type: ignore[arg-type]
    )


class _OidcSource(PydanticBaseSettingsSource):
    """Every ``ANONID_OIDC_<NAME>_<FIELD>`` of the environment and the ``.env`` file (the
    environment wins), as the ``oidc`` field: names are not known before the settings are read."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        env: PydanticBaseSettingsSource,
        dotenv: PydanticBaseSettingsSource,
    ) -> None:
        super().__init__(settings_cls)
        self._sources = [s for s in (dotenv, env) if isinstance(s, EnvSettingsSource)]

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ gathers the values

    def __call__(self) -> dict[str, Any]:
        found: dict[str, str] = {}
        for source in self._sources:  # the environment last, so it wins
            for name, value in source.env_vars.items():
                lowered = name.lower()
                if (
                    value is not None
                    and lowered.startswith(OIDC_PREFIX)
                    and lowered.endswith(OIDC_FIELDS)
                ):
                    found[lowered.removeprefix(OIDC_PREFIX)] = value
        return {"oidc": found} if found else {}


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
