"""Pydantic models that document the JSON the API speaks (bodies are parsed by ``deps.json_body``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class RequestBody(BaseModel):
    """A JSON request body: strict types, unknown fields ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)


class User(BaseModel):
    id: str
    state: Literal["anonymous", "pending", "registered"]
    is_anonymous: bool
    username: str | None
    email: str | None
    pending_email: str | None
    email_verified: bool
    data: dict[str, Any]
    created_at: str
    updated_at: str
    # password, email, passkey, oidc:<provider>: how a registered account signs in (none for guests)
    methods: list[str]


class SessionOut(BaseModel):
    """A session (``S``): both cookies are set; with ``X-Anonid-Token: bearer`` the body has
    ``access_token``, ``token_type`` and ``refresh_token`` instead and no cookie is set.
    ``expires_in`` is the access token's lifetime in seconds."""

    user: User
    expires_in: int
    access_token: str | None = None
    token_type: Literal["Bearer"] | None = None
    refresh_token: str | None = None
    merged_from: str | None = None


class SessionInfo(BaseModel):
    id: str
    created_at: str
    last_used_at: str
    user_agent: str | None
    current: bool


class SessionsOut(BaseModel):
    sessions: list[SessionInfo]


class DataOut(BaseModel):
    data: dict[str, Any]


class Health(BaseModel):
    status: str


class Jwks(BaseModel):
    model_config = ConfigDict(extra="allow")
    keys: list[dict[str, Any]]


class ChallengeOut(BaseModel):
    """An ALTCHA challenge (the ``altcha`` libraries' format, CONTRACT §16)."""

    algorithm: Literal["SHA-256"]
    challenge: str
    maxnumber: int
    salt: str
    signature: str
