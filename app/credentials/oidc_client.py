"""The OpenID Connect client (CONTRACT §13): discovery, the authorization request with PKCE, the
code exchange, and ID token verification against the provider's JWKS. Network only: no database.

Built from Authlib's pieces (the grant URI, PKCE S256, the token request, the ID token claims
rules of ``authlib.oidc.core``) over joserfc for the signatures; the HTTP calls are anonid's own
``httpx`` client, so no call waits on a provider while holding a database connection.

- Discovery: ``{issuer}/.well-known/openid-configuration``, whose ``issuer`` must be the configured
  one (OpenID Connect Discovery §4.3), cached ``METADATA_SECONDS``. Its endpoints must be https,
  or http on a loopback host for a loopback http issuer (as the issuer itself, §3).
- ID tokens: signed with an asymmetric algorithm the provider announces (never ``none`` or an HMAC
  key), by a key of its JWKS; an unknown ``kid`` refetches the JWKS at most once per
  ``ANONID_OIDC_JWKS_REFRESH_SECONDS``, so a rotation is followed and made-up kids cost nothing.
  Claims: ``iss`` is the issuer, ``aud`` holds the client id (``azp`` when several), ``exp`` and
  ``iat`` (``LEEWAY_SECONDS`` of clock skew), ``sub``, ``at_hash`` when given, and the nonce rule
  of the caller.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749.parameters import prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken, IDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from app.errors import FlowError
from app.settings import OidcProvider, Settings, is_loopback_host

log = logging.getLogger("anonid.oidc")

METADATA_SECONDS = 3600
LEEWAY_SECONDS = 60
MAX_DOCUMENT_BYTES = 512 * 1024
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# Asymmetric signatures only: "none" and HMAC (keyed by the client secret) are refused.
SIGNING_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
MAX_SUBJECT = 255

NonceRule = Callable[[Any], bool]


class InvalidIdToken(Exception):
    """The ID token failed verification; the message is for the log only."""


class ProviderUnavailable(Exception):
    """The provider could not be reached or answered nonsense; the message is for the log only."""


def exact_nonce(expected: str) -> NonceRule:
    """The browser flow: the token carries exactly the nonce anonid sent."""

    def check(claim: Any) -> bool:
        return isinstance(claim, str) and hmac.compare_digest(claim, expected)

    return check


def native_nonce(given: str | None) -> NonceRule:
    """The native flow: a token with a nonce needs the app's nonce, raw or as its SHA-256 in hex
    (Apple and Google on Android hash it); a nonce the token lacks is refused too."""

    def check(claim: Any) -> bool:
        if claim is None:
            return given is None
        if given is None or not isinstance(claim, str):
            return False
        hashed = hashlib.sha256(given.encode()).hexdigest()
        return hmac.compare_digest(claim, given) or hmac.compare_digest(claim.lower(), hashed)

    return check


def _allowed_url(url: Any, issuer: str) -> bool:
    """https, or http on a loopback host when the issuer is itself a loopback http URL."""
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    issuer_parts = urlsplit(issuer)
    return (
        parts.scheme == "http"
        and issuer_parts.scheme == "http"
        and is_loopback_host(parts.hostname)
        and is_loopback_host(issuer_parts.hostname)
    )


class ProviderClient:
    """One provider: its discovery document and JWKS, cached per process."""

    def __init__(self, config: OidcProvider, http: httpx.AsyncClient, settings: Settings) -> None:
        self.config = config
        self._http = http
        self._jwks_refresh = settings.oidc_jwks_refresh_seconds
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = float("-inf")
        self._metadata_lock = asyncio.Lock()
        self._keys_lock = asyncio.Lock()

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._http.stream("GET", url, headers={"Accept": "application/json"}) as r:
                if r.status_code != 200:
                    raise ProviderUnavailable(f"GET {url}: HTTP {r.status_code}")
                body = bytearray()
                async for chunk in r.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise ProviderUnavailable(f"GET {url}: the document is too large")
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"GET {url}: {type(exc).__name__}") from None
        try:
            document = orjson.loads(bytes(body))
        except orjson.JSONDecodeError:
            raise ProviderUnavailable(f"GET {url}: not JSON") from None
        if not isinstance(document, dict):
            raise ProviderUnavailable(f"GET {url}: not a JSON object")
        return document

    async def metadata(self) -> dict[str, Any]:
        """The discovery document, checked; raises ``ProviderUnavailable``."""
        if self._metadata is not None and time.monotonic() - self._metadata_at < METADATA_SECONDS:
            return self._metadata
        async with self._metadata_lock:
            if self._metadata is None or time.monotonic() - self._metadata_at >= METADATA_SECONDS:
                issuer = self.config.issuer
                url = issuer.rstrip("/") + "/.well-known/openid-configuration"
                document = await self._get_json(url)
                if document.get("issuer") != issuer:
                    raise ProviderUnavailable(
                        f"discovery names issuer {document.get('issuer')!r}, not {issuer!r}"
                    )
                for field in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not _allowed_url(document.get(field), issuer):
                        raise ProviderUnavailable(f"discovery: {field} is missing or not https")
                self._metadata, self._metadata_at = document, time.monotonic()
        return self._metadata

    async def authorization_url(
        self, redirect_uri: str, state: str, nonce: str, code_verifier: str
    ) -> str:
        """Where to send the browser: the authorization code flow with PKCE (S256)."""
        metadata = await self.metadata()
        params: list[tuple[str, str]] = [
            ("response_type", "code"),
            ("client_id", self.config.client_id),
            ("redirect_uri", redirect_uri),
            ("scope", self.config.scopes),
            ("state", state),
            ("nonce", nonce),
            ("code_challenge", create_s256_code_challenge(code_verifier)),
            ("code_challenge_method", "S256"),
        ]
        if self.config.response_mode == "form_post":
            params.append(("response_mode", "form_post"))
        return str(add_params_to_uri(metadata["authorization_endpoint"], params))

    async def exchange_code(
        self, code: str, redirect_uri: str, code_verifier: str
    ) -> tuple[str, Any]:
        """The ID token for an authorization code, and the access token (for ``at_hash``);
        raises ``ProviderUnavailable`` for any failure of the provider's."""
        metadata = await self.metadata()
        body = prepare_token_request(
            "authorization_code", code=code, redirect_uri=redirect_uri, code_verifier=code_verifier
        )
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        methods = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        secret = self.config.client_secret
        if secret is None:
            body += "&" + _form({"client_id": self.config.client_id})
        elif "client_secret_basic" in methods or "client_secret_post" not in methods:
            # RFC 6749 §2.3.1: both parts form-encoded before Basic (Authlib leaves them raw).
            user = quote(self.config.client_id, safe="")
            password = quote(secret, safe="")
            headers["Authorization"] = "Basic " + _b64(f"{user}:{password}")
        else:
            body += "&" + _form({"client_id": self.config.client_id, "client_secret": secret})
        try:
            response = await self._http.post(
                metadata["token_endpoint"], content=body, headers=headers
            )
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"token endpoint: {type(exc).__name__}") from None
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise ProviderUnavailable("token endpoint: the answer is too large")
        try:
            tokens = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise ProviderUnavailable(
                f"token endpoint: HTTP {response.status_code}, not JSON"
            ) from None
        if response.status_code != 200 or not isinstance(tokens, dict):
            error = tokens.get("error") if isinstance(tokens, dict) else None
            raise ProviderUnavailable(f"token endpoint: HTTP {response.status_code} {error!r}")
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise ProviderUnavailable("token endpoint: no id_token in the answer")
        return id_token, tokens.get("access_token")

    async def _key_set(self, force: bool) -> KeySet:
        """The JWKS; refetched when ``force`` (an unknown kid) at most once per interval."""
        now = time.monotonic()
        due = self._keys is None or (force and now - self._keys_at >= self._jwks_refresh)
        if not due:
            assert self._keys is not None
            return self._keys
        async with self._keys_lock:
            if self._keys is None or (
                force and time.monotonic() - self._keys_at >= self._jwks_refresh
            ):
                metadata = await self.metadata()
                document = await self._get_json(metadata["jwks_uri"])
                self._keys_at = time.monotonic()
                try:
                    self._keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
                except (JoseError, ValueError, TypeError, KeyError) as exc:
                    raise ProviderUnavailable(f"JWKS: {type(exc).__name__}") from None
        assert self._keys is not None
        return self._keys

    async def verify_id_token(
        self, id_token: str, nonce_rule: NonceRule, access_token: Any = None
    ) -> dict[str, Any]:
        """The claims of a valid ID token; raises ``InvalidIdToken`` or ``ProviderUnavailable``."""
        metadata = await self.metadata()
        announced = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = [a for a in announced if a in SIGNING_ALGORITHMS] or ["RS256"]
        if len(id_token) > 16 * 1024:
            raise InvalidIdToken("too long")
        try:
            try:
                token = jwt.decode(id_token, await self._key_set(False), algorithms=algorithms)
            except InvalidKeyIdError:
                token = jwt.decode(id_token, await self._key_set(True), algorithms=algorithms)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise InvalidIdToken(f"signature: {type(exc).__name__}") from None
        claims = dict(token.claims)
        options: dict[str, Any] = {
            "iss": {"essential": True, "value": self.config.issuer},
            "aud": {"essential": True, "value": self.config.client_id},
        }
        params: dict[str, Any] = {"client_id": self.config.client_id}
        claims_cls: type[IDToken] = IDToken
        if isinstance(access_token, str):
            params["access_token"] = access_token
            claims_cls = CodeIDToken
        try:
            claims_cls(claims, token.header, options, params).validate(leeway=LEEWAY_SECONDS)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise InvalidIdToken(f"claims: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT:
            raise InvalidIdToken("sub is missing or too long")
        if not nonce_rule(claims.get("nonce")):
            raise InvalidIdToken("nonce does not match")
        return claims

    async def code_to_claims(
        self, code: str, redirect_uri: str, code_verifier: str, nonce: str
    ) -> dict[str, Any]:
        """The browser flow's end: exchange the code, verify its ID token. Raises ``FlowError``
        (``provider_error`` or ``invalid_id_token``)."""
        try:
            id_token, access_token = await self.exchange_code(code, redirect_uri, code_verifier)
            return await self.verify_id_token(id_token, exact_nonce(nonce), access_token)
        except ProviderUnavailable as exc:
            raise FlowError("provider_error", str(exc)) from None
        except InvalidIdToken as exc:
            raise FlowError("invalid_id_token", str(exc)) from None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _form(values: dict[str, str]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in values.items())


class OidcProviders:
    """The configured providers of one process, and the one HTTP client they share."""

    def __init__(self, settings: Settings) -> None:
        self._http = httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False, trust_env=False)
        self.clients = {
            name: ProviderClient(config, self._http, settings)
            for name, config in settings.oidc_provider_map.items()
        }

    def get(self, name: str) -> ProviderClient | None:
        return self.clients.get(name)

    async def close(self) -> None:
        await self._http.aclose()
