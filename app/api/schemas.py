"""Pydantic models that document the JSON the API speaks (bodies are parsed by ``deps.json_body``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


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


class SessionOut(BaseModel):
    """With ``X-Anonid-Token: bearer`` the body also has ``access_token`` and ``token_type``."""

    user: User
    expires_in: int
    access_token: str | None = None
    token_type: Literal["Bearer"] | None = None
    merged_from: str | None = None


class DataOut(BaseModel):
    data: dict[str, Any]


class Health(BaseModel):
    status: str


class Jwks(BaseModel):
    model_config = ConfigDict(extra="allow")
    keys: list[dict[str, Any]]
