"""Sign in with a provider (CONTRACT §5, §13): authorize, callback, the native token endpoint,
and the signed-in user's identities. Thin: the flows are ``app.api.oauth_flows``."""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from app.api import oauth_flows
from app.api.deps import (
    Session,
    Transaction,
    body_spec,
    json_body,
    lenient_session,
    require_session,
    services,
)
from app.api.errors import responses
from app.api.responses import empty_response, json_response
from app.api.schemas import SessionOut
from app.credentials.identities import list_identities, remove_identity
from app.errors import AnonidError

log = logging.getLogger("anonid.oidc")

router = APIRouter(prefix="/v1", tags=["sign in with a provider"])

MAX_FORM_FIELD = 4096


class NativeTokenIn(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    id_token: str = Field(max_length=16384)
    nonce: str | None = Field(None, max_length=1024)


class IdentityOut(BaseModel):
    id: str
    provider: str
    subject: str
    email: str | None
    created_at: str


class IdentitiesOut(BaseModel):
    identities: list[IdentityOut]


def _redirect_doc(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"Location": {"schema": {"type": "string"}, "description": "Where to go"}},
    }


_CALLBACK_RESPONSES: dict[int | str, dict[str, Any]] = {
    303: _redirect_doc(
        "To `return_to`, signed in (the session cookie is set); on any failure to "
        "`return_to?error=<code>` (`access_denied`, `invalid_id_token`, `provider_error`, "
        "`identity_taken`, `email_taken`), or to `/account/login?error=invalid_state` when the "
        "state is unknown, spent, expired or was started by another browser"
    ),
    **responses("not_found"),
}


@router.get(
    "/oauth/{provider}/authorize",
    summary="Start signing in with a provider: a redirect to it (authorization code with PKCE)",
    description=(
        "Remembers who started it (the guest or the account of the session, if any) and "
        "`return_to`, which must be on `ANONID_PUBLIC_URL` or an origin of "
        "`ANONID_ALLOWED_ORIGINS` (default: the first allowed origin). When the provider cannot "
        "be reached, `303` to `return_to?error=provider_error`."
    ),
    status_code=302,
    response_class=Response,
    responses={
        302: _redirect_doc("To the provider's authorization endpoint"),
        303: _redirect_doc("The provider is unreachable: `return_to?error=provider_error`"),
        **responses("not_found", "invalid_return_to", "rate_limited"),
    },
)
async def authorize(request: Request, provider: str, return_to: str | None = None) -> Response:
    return await oauth_flows.start_authorization(request, services(request), provider, return_to)


@router.get(
    "/oauth/{provider}/callback",
    summary="The provider's answer (register `{ANONID_PUBLIC_URL}/v1/oauth/{provider}/callback`)",
    status_code=303,
    response_class=Response,
    responses=_CALLBACK_RESPONSES,
)
async def callback(request: Request, provider: str) -> Response:
    params = {k: v[:MAX_FORM_FIELD] for k, v in request.query_params.items()}
    return await oauth_flows.finish_callback(request, services(request), provider, params)


@router.post(
    "/oauth/{provider}/callback",
    summary="The provider's answer as a form post (`response_mode=form_post`, as Apple sends)",
    description="Exempt from the CSRF origin check by design (the provider posts it from its "
    "own site); its single-use `state`, bound to the browser that started the flow, protects it.",
    status_code=303,
    response_class=Response,
    responses=_CALLBACK_RESPONSES,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            k: {"type": "string"}
                            for k in ("code", "state", "iss", "error", "error_description")
                        },
                    }
                }
            }
        }
    },
)
async def callback_form(request: Request, provider: str) -> Response:
    try:
        form = await request.form(max_files=0, max_fields=16)
        params = {k: v[:MAX_FORM_FIELD] for k, v in form.items() if isinstance(v, str)}
    except Exception as exc:  # an unreadable body is a failed callback, never a 5xx
        log.info("unreadable callback form: %s", type(exc).__name__)
        params = {}
    return await oauth_flows.finish_callback(request, services(request), provider, params)


@router.post(
    "/oauth/{provider}/token",
    summary="Sign in with an ID token a native app obtained itself (Sign in with Apple, Google)",
    description=(
        "The same outcomes as the browser flow (§13): a guest session is registered in place or "
        "merged. The nonce is checked when the token carries one: the raw value, or its SHA-256 "
        "in hex. With `X-Anonid-Token: bearer` the token is in the body instead of a cookie."
    ),
    responses={
        200: {"model": SessionOut},
        **responses(
            "invalid_credentials",
            "not_found",
            "email_taken",
            "invalid_request",
            "invalid_json",
            "rate_limited",
            "csrf_rejected",
            "unsupported_media_type",
        ),
    },
    openapi_extra=body_spec(NativeTokenIn),
)
async def native_token(
    request: Request,
    provider: str,
    session: Session | None = Depends(lenient_session),
    body: NativeTokenIn = Depends(json_body(NativeTokenIn)),
) -> Response:
    return await oauth_flows.native_sign_in(
        request, services(request), provider, session, body.id_token, body.nonce
    )


@router.get(
    "/me/identities",
    summary="The provider identities linked to this account",
    responses={200: {"model": IdentitiesOut}, **responses("invalid_session")},
)
async def identities(request: Request, session: Session = Depends(require_session)) -> Response:
    svc = services(request)
    async with svc.single_statement() as conn:
        found = await list_identities(conn, session.claims.sub, session.claims.sv)
    return json_response({"identities": found})


@router.delete(
    "/me/identities/{identity_id}",
    summary="Unlink a provider identity",
    description="`409 last_credential` when the account would be left with no way to sign in "
    "(no address and no other identity).",
    status_code=204,
    responses=responses("invalid_session", "not_found", "last_credential", "csrf_rejected"),
)
async def unlink_identity(
    request: Request,
    identity_id: str,
    conn: AsyncConnection = Transaction,
    session: Session = Depends(require_session),
) -> Response:
    try:
        parsed = UUID(identity_id)
    except ValueError:
        raise AnonidError("not_found") from None
    await remove_identity(conn, session.claims.sub, session.claims.sv, parsed)
    return empty_response(services(request))
