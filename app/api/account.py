"""Conversion and credential endpoints of CONTRACT §5: the registered half of the API.

Thin: parse, authenticate, rate-limit, call one lifecycle function inside the request's one
transaction, shape the response. The rules live in ``app/lifecycle``.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from app.api import credential_flows
from app.api.credential_flows import limit_credentials, login_and_merge, redeem_with_password
from app.api.deps import (
    Session,
    Transaction,
    body_spec,
    json_body,
    lenient_session,
    require_session,
    services,
    user_agent,
)
from app.api.errors import responses
from app.api.responses import empty_response, json_response, private_response, session_response
from app.api.schemas import RequestBody, SessionOut
from app.credentials import passwords
from app.credentials.email_codes import code_key
from app.errors import AnonidError
from app.lifecycle import conversion
from app.lifecycle.addresses import (
    SMTPUTF8_UNAVAILABLE,
    SMTPUTF8_UNKNOWN,
    needs_smtputf8,
    parse_email,
)

router = APIRouter(prefix="/v1")


class EmailIn(RequestBody):
    email: str


class LoginIn(RequestBody):
    email: str
    password: str


class TokenPasswordIn(RequestBody):
    token: str
    password: str


class PasswordChangeIn(RequestBody):
    current_password: str | None = None  # needed only when the account has a password
    new_password: str


class ConversionOut(BaseModel):
    state: Literal["pending"]
    pending_email: str


class AcceptedOut(BaseModel):
    status: Literal["accepted"]
    message: str


RESET_ACCEPTED = {
    "status": "accepted",
    "message": "If an account has this address, a link to reset its password is on its way.",
}


async def conversion_address(
    request: Request, body: EmailIn = Depends(json_body(EmailIn, "invalid_email"))
) -> str:
    """The requested address in its normal form; ``invalid_email`` (422) when it is none, or when
    mail to it could never be delivered (a non-ASCII local part without SMTPUTF8)."""
    email = parse_email(body.email)
    if needs_smtputf8(email):
        support = services(request).extras.get("smtputf8")
        if support is None or not await support.offers():
            known_no = support is not None and support.offered is False
            raise AnonidError(
                "invalid_email", SMTPUTF8_UNAVAILABLE if known_no else SMTPUTF8_UNKNOWN
            )
    return email


@router.post(
    "/me/conversion",
    summary="Ask to keep this guest account: a setup link and a code go to the address",
    description=(
        "The email carries the setup link (for `/v1/password-setup` or `/v1/conversion/confirm`) "
        "and a six-digit code (for `/v1/me/conversion/verify` in this session). The answer "
        "(status, body and the state `/v1/me` shows afterwards) is the same whether or not the "
        "address already belongs to an account; in that case no link or code is made and the "
        "owner is told instead."
    ),
    status_code=202,
    responses={
        202: {"model": ConversionOut},
        **responses(
            "invalid_session",
            "already_registered",
            "invalid_email",
            "invalid_json",
            "rate_limited",
            "csrf_rejected",
            "unsupported_media_type",
        ),
    },
    openapi_extra=body_spec(EmailIn),
)
async def request_conversion(
    request: Request,
    session: Session = Depends(require_session),
    # Before the transaction: the SMTPUTF8 question may wait for the mail server, never while
    # holding a pooled connection.
    email: str = Depends(conversion_address),
    conn: AsyncConnection = Transaction,
) -> Response:
    svc = services(request)
    await limit_credentials(request, svc, email)
    row = await conversion.request_conversion(
        conn, svc.settings, code_key(svc), session.claims.sub, session.claims.sv, email
    )
    return private_response(
        request, svc, {"state": "pending", "pending_email": row.pending_email}, 202
    )


@router.delete(
    "/me/conversion",
    summary="Cancel a conversion request: outstanding setup links stop working",
    status_code=204,
    responses=responses("invalid_session", "already_registered", "csrf_rejected"),
)
async def cancel_conversion(
    request: Request,
    conn: AsyncConnection = Transaction,
    session: Session = Depends(require_session),
) -> Response:
    await conversion.cancel_conversion(conn, session.claims.sub, session.claims.sv)
    return empty_response(services(request))


@router.post(
    "/password-setup",
    summary="Redeem a password-setup link: the guest account becomes registered, data kept",
    responses={
        200: {"model": SessionOut},
        **responses(
            "invalid_token",
            "invalid_request",
            "invalid_json",
            "token_expired",
            "email_taken",
            "weak_password",
            "csrf_rejected",
            "unsupported_media_type",
        ),
    },
    openapi_extra=body_spec(TokenPasswordIn),
)
async def password_setup(
    request: Request, body: TokenPasswordIn = Depends(json_body(TokenPasswordIn))
) -> Response:
    svc = services(request)
    pair = await redeem_with_password(svc, "setup", body.token, body.password, user_agent(request))
    return session_response(request, svc, pair)


@router.post(
    "/login",
    summary="Log in with email and password; a guest session's data is merged into the account",
    description=(
        "With a guest (anonymous) session and `ANONID_MERGE_ON_LOGIN`, the guest's data is merged "
        "into the account, the guest is deleted, and the body carries `merged_from`."
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
    openapi_extra=body_spec(LoginIn),
)
async def login(
    request: Request,
    session: Session | None = Depends(lenient_session),
    body: LoginIn = Depends(json_body(LoginIn)),
) -> Response:
    svc = services(request)
    await limit_credentials(request, svc, body.email)
    pair, merged_from = await login_and_merge(
        svc, session, body.email, body.password, user_agent(request)
    )
    extra: dict[str, Any] = {"merged_from": merged_from} if merged_from else {}
    return session_response(request, svc, pair, 200, **extra)


@router.post(
    "/me/password",
    summary="Change or set the password; every other session ends",
    description=(
        "`current_password` is needed only when the account has a password: an account made "
        "by an email code or link, a provider or a passkey sets its first one without. Rate "
        "limited like login: per client IP and per the account's address."
    ),
    responses={
        200: {"model": SessionOut},
        **responses(
            "invalid_session",
            "forbidden",
            "invalid_credentials",
            "weak_password",
            "rate_limited",
            "invalid_request",
            "invalid_json",
            "csrf_rejected",
            "unsupported_media_type",
        ),
    },
    openapi_extra=body_spec(PasswordChangeIn),
)
async def change_password(
    request: Request,
    session: Session = Depends(require_session),
    body: PasswordChangeIn = Depends(json_body(PasswordChangeIn)),
) -> Response:
    svc = services(request)
    pair = await credential_flows.change_password(
        request, svc, session, body.current_password, body.new_password
    )
    return session_response(request, svc, pair)


@router.post(
    "/logout-all",
    summary="End every session of this registered account and clear both cookies",
    status_code=204,
    responses=responses("invalid_session", "forbidden", "csrf_rejected"),
)
async def logout_all(
    request: Request,
    conn: AsyncConnection = Transaction,
    session: Session = Depends(require_session),
) -> Response:
    await passwords.logout_everywhere(conn, session.claims.sub, session.claims.sv)
    return empty_response(services(request), clear_cookie=True)


@router.post(
    "/password-reset",
    summary="Ask for a password-reset link",
    description="Always `202` with the same body: the answer does not reveal whether the "
    "address has an account. Only registered accounts are sent a link.",
    status_code=202,
    responses={
        202: {"model": AcceptedOut},
        **responses(
            "invalid_request",
            "invalid_json",
            "rate_limited",
            "csrf_rejected",
            "unsupported_media_type",
        ),
    },
    openapi_extra=body_spec(EmailIn),
)
async def password_reset(
    request: Request,
    conn: AsyncConnection = Transaction,
    body: EmailIn = Depends(json_body(EmailIn)),
) -> Response:
    svc = services(request)
    await limit_credentials(request, svc, body.email)
    await passwords.request_password_reset(conn, svc.settings, body.email)
    return json_response(RESET_ACCEPTED, 202)


@router.post(
    "/password-reset/confirm",
    summary="Set a new password with a reset link; every other session ends",
    responses={
        200: {"model": SessionOut},
        **responses(
            "invalid_token",
            "invalid_request",
            "invalid_json",
            "token_expired",
            "weak_password",
            "csrf_rejected",
            "unsupported_media_type",
        ),
    },
    openapi_extra=body_spec(TokenPasswordIn),
)
async def password_reset_confirm(
    request: Request, body: TokenPasswordIn = Depends(json_body(TokenPasswordIn))
) -> Response:
    svc = services(request)
    pair = await redeem_with_password(svc, "reset", body.token, body.password, user_agent(request))
    return session_response(request, svc, pair)
