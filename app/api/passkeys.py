"""Passkeys (CONTRACT §5, §14): add one (a guest becomes registered in place), sign in with one,
and the signed-in account's list, rename and remove. Thin: the flows are
``app.api.passkey_flows``, the rules ``app.credentials``."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from app.api import passkey_flows
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
from app.api.passkey_flows import CHALLENGE_ID_HEADER
from app.api.responses import (
    empty_response,
    json_response,
    private_response,
    session_response,
)
from app.api.schemas import RequestBody, SessionOut
from app.credentials import passkey_store
from app.errors import AnonidError

router = APIRouter(prefix="/v1", tags=["passkeys"])

CREDENTIAL_DOC = "`PublicKeyCredential.toJSON()` of the browser's answer"
OPTIONS_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": True}


class AddPasskeyIn(RequestBody):
    # Any JSON: what is not a credential is refused as ``invalid_passkey``, not as a bad body.
    credential: Any = Field(None, json_schema_extra={"type": "object"}, description=CREDENTIAL_DOC)
    name: str | None = Field(None, max_length=passkey_store.MAX_NAME)


class PasskeySignInIn(RequestBody):
    credential: Any = Field(None, json_schema_extra={"type": "object"}, description=CREDENTIAL_DOC)


class RenameIn(RequestBody):
    name: str = Field(max_length=passkey_store.MAX_NAME)


class PasskeyOut(BaseModel):
    id: str
    name: str
    created_at: str
    last_used_at: str | None


class PasskeysOut(BaseModel):
    passkeys: list[PasskeyOut]


def _passkey_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise AnonidError("not_found") from None


@router.post(
    "/me/passkeys/options",
    summary="Creation options for a new passkey of this account (WebAuthn JSON)",
    description=(
        "`PublicKeyCredentialCreationOptionsJSON`: a resident key required, user verification "
        "preferred, the account's id as the user handle, its passkeys excluded. The challenge "
        "is single use, lasts 5 minutes and only this session can use it."
    ),
    responses={
        200: {"content": {"application/json": {"schema": OPTIONS_SCHEMA}}},
        **responses("invalid_session", "csrf_rejected"),
    },
)
async def creation_options(
    request: Request, session: Session = Depends(require_session)
) -> Response:
    svc = services(request)
    return private_response(request, svc, await passkey_flows.registration_options(svc, session))


@router.post(
    "/me/passkeys",
    summary="Add a passkey: a guest becomes registered in place (no address needed)",
    description=(
        "`credential` is the answer of `navigator.credentials.create()` to the options of "
        "`POST /v1/me/passkeys/options`. A guest becomes registered with the same id and data "
        "(`user.converted`, method `passkey`) and gets a fresh session; a registered account "
        "gets its session renewed."
    ),
    status_code=201,
    responses={
        201: {"model": SessionOut},
        **responses(
            "invalid_passkey",
            "invalid_session",
            "invalid_request",
            "invalid_json",
            "rate_limited",
            "csrf_rejected",
            "unsupported_media_type",
        ),
    },
    openapi_extra=body_spec(AddPasskeyIn),
)
async def add_passkey(
    request: Request,
    session: Session = Depends(require_session),
    body: AddPasskeyIn = Depends(json_body(AddPasskeyIn)),
) -> Response:
    svc = services(request)
    pair = await passkey_flows.add_passkey(request, svc, session, body.credential, body.name)
    return session_response(request, svc, pair, 201)


@router.get(
    "/me/passkeys",
    summary="The passkeys of this account",
    responses={200: {"model": PasskeysOut}, **responses("invalid_session")},
)
async def list_passkeys(request: Request, session: Session = Depends(require_session)) -> Response:
    svc = services(request)
    async with svc.single_statement() as conn:
        found = await passkey_store.list_passkeys(conn, session.claims.sub, session.claims.sv)
    return private_response(request, svc, {"passkeys": found})


@router.patch(
    "/me/passkeys/{passkey_id}",
    summary="Rename a passkey",
    responses={
        200: {"model": PasskeyOut},
        **responses(
            "invalid_session",
            "not_found",
            "invalid_request",
            "invalid_json",
            "csrf_rejected",
            "unsupported_media_type",
        ),
    },
    openapi_extra=body_spec(RenameIn),
)
async def rename_passkey(
    request: Request,
    passkey_id: str,
    session: Session = Depends(require_session),
    body: RenameIn = Depends(json_body(RenameIn)),
) -> Response:
    svc = services(request)
    name = passkey_store.clean_name(body.name)
    async with svc.single_statement() as conn:
        renamed = await passkey_store.rename_passkey(
            conn, session.claims.sub, session.claims.sv, _passkey_id(passkey_id), name
        )
    return private_response(request, svc, renamed)


@router.delete(
    "/me/passkeys/{passkey_id}",
    summary="Remove a passkey",
    description="`409 last_credential` when the account would be left with no way to sign in "
    "(no verified address, no identity and no other passkey).",
    status_code=204,
    responses=responses("invalid_session", "not_found", "last_credential", "csrf_rejected"),
)
async def remove_passkey(
    request: Request,
    passkey_id: str,
    conn: AsyncConnection = Transaction,
    session: Session = Depends(require_session),
) -> Response:
    parsed = _passkey_id(passkey_id)
    await passkey_store.remove_passkey(conn, session.claims.sub, session.claims.sv, parsed)
    return empty_response(services(request))


@router.post(
    "/login/passkey/options",
    summary="Request options for signing in with a passkey (WebAuthn JSON)",
    description=(
        "`PublicKeyCredentialRequestOptionsJSON` for discoverable credentials. The challenge is "
        "single use, lasts 5 minutes and is bound to this browser (a short cookie) and to the "
        f"`{CHALLENGE_ID_HEADER}` header of this response, which clients without cookies send "
        "back with the assertion. Limited per client IP by `ANONID_ANONYMOUS_RATE_LIMIT`."
    ),
    responses={
        200: {
            "content": {"application/json": {"schema": OPTIONS_SCHEMA}},
            "headers": {
                CHALLENGE_ID_HEADER: {
                    "schema": {"type": "string"},
                    "description": "Send it back with `POST /v1/login/passkey`",
                }
            },
        },
        **responses("rate_limited", "csrf_rejected"),
    },
)
async def request_options(request: Request) -> Response:
    svc = services(request)
    options, client_id, cookie = await passkey_flows.login_options(request, svc)
    response = json_response(options)
    response.headers[CHALLENGE_ID_HEADER] = client_id
    response.headers.append("set-cookie", cookie)
    return response


@router.post(
    "/login/passkey",
    summary="Sign in with a passkey; a guest session's data is merged into the account",
    description=(
        "`credential` is the answer of `navigator.credentials.get()` to the options of "
        "`POST /v1/login/passkey/options`, sent from the browser that asked for them or with "
        f"their `{CHALLENGE_ID_HEADER}`. With a guest session the guest is merged as for "
        "`POST /v1/login` and the body carries `merged_from`."
    ),
    responses={
        200: {"model": SessionOut},
        **responses(
            "invalid_credentials",
            "invalid_request",
            "invalid_json",
            "rate_limited",
            "csrf_rejected",
            "unsupported_media_type",
        ),
    },
    openapi_extra=body_spec(PasskeySignInIn),
)
async def sign_in(
    request: Request,
    session: Session | None = Depends(lenient_session),
    body: PasskeySignInIn = Depends(json_body(PasskeySignInIn)),
) -> Response:
    svc = services(request)
    pair, merged_from = await passkey_flows.sign_in(request, svc, session, body.credential)
    extra = {"merged_from": str(merged_from)} if merged_from is not None else {}
    return session_response(request, svc, pair, 200, **extra)
