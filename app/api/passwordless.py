"""Email codes and links (CONTRACT §5, §6): finish a conversion without a password, sign in by
email, change the address.

Thin: parse, authenticate, call one flow of ``app.api.email_flows``, shape the response.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from app.api import email_flows
from app.api.account import AcceptedOut, EmailIn, conversion_address
from app.api.deps import (
    Session,
    body_spec,
    json_body,
    lenient_session,
    require_session,
    services,
)
from app.api.errors import responses
from app.api.responses import json_response, private_response, session_response
from app.api.schemas import RequestBody, SessionOut, User
from app.errors import AnonidError
from app.lifecycle.addresses import parse_email
from app.lifecycle.users import user_view

router = APIRouter(prefix="/v1")


class CodeIn(RequestBody):
    code: str


class TokenIn(RequestBody):
    token: str


class CodeOrTokenIn(RequestBody):
    code: str | None = None
    token: str | None = None


class EmailCodeOrTokenIn(RequestBody):
    email: str | None = None
    code: str | None = None
    token: str | None = None


LOGIN_ACCEPTED = {
    "status": "accepted",
    "message": "If an account has this address, a code and a link to sign in are on their way.",
}
CHANGE_ACCEPTED = {
    "status": "accepted",
    "message": "If the address can be used, a code and a link to confirm it are on their way.",
}


@router.post(
    "/me/conversion/verify",
    summary="Finish a conversion with the code from the email: registered, no password, data kept",
    description=(
        "On the guest's own session (the one that asked for the conversion). Each code allows "
        "five tries; a wrong one answers `invalid_code`, and after the fifth the code is dead "
        "even if the next try is right. Method `email_code`."
    ),
    responses={
        200: {"model": SessionOut},
        **responses(
            "invalid_code",
            "code_expired",
            "email_taken",
            "invalid_session",
            "already_registered",
            "invalid_request",
            "invalid_json",
            "rate_limited",
            "csrf_rejected",
            "unsupported_media_type",
        ),
    },
    openapi_extra=body_spec(CodeIn),
)
async def verify_conversion_code(
    request: Request,
    session: Session = Depends(require_session),
    body: CodeIn = Depends(json_body(CodeIn)),
) -> Response:
    svc = services(request)
    pair = await email_flows.convert_by_code(request, svc, session, body.code)
    return session_response(request, svc, pair)


@router.post(
    "/conversion/confirm",
    summary="Finish a conversion with the setup link and no password: registered, data kept",
    description="The setup link's token, as `/v1/password-setup` takes it. Method `email_link`.",
    responses={
        200: {"model": SessionOut},
        **responses(
            "invalid_token",
            "token_expired",
            "email_taken",
            "invalid_request",
            "invalid_json",
            "csrf_rejected",
            "unsupported_media_type",
        ),
    },
    openapi_extra=body_spec(TokenIn),
)
async def confirm_conversion(
    request: Request, body: TokenIn = Depends(json_body(TokenIn))
) -> Response:
    svc = services(request)
    pair = await email_flows.convert_by_link(request, svc, body.token)
    return session_response(request, svc, pair)


@router.post(
    "/login/email",
    summary="Ask for a sign-in code and link by email",
    description=(
        "Always `202` with the same body, whether or not the address has an account; only an "
        "account's address is sent the `login_code` email."
    ),
    status_code=202,
    responses={
        202: {"model": AcceptedOut},
        **responses(
            "invalid_email",
            "invalid_json",
            "rate_limited",
            "csrf_rejected",
            "unsupported_media_type",
        ),
    },
    openapi_extra=body_spec(EmailIn),
)
async def login_email(
    request: Request, body: EmailIn = Depends(json_body(EmailIn, "invalid_email"))
) -> Response:
    svc = services(request)
    await email_flows.send_login_code(request, svc, parse_email(body.email))
    return json_response(LOGIN_ACCEPTED, 202)


@router.post(
    "/login/email/verify",
    summary="Sign in with the code (and address) or the link of a sign-in email",
    description=(
        '`{"email", "code"}` or `{"token"}`. With a guest session and '
        "`ANONID_MERGE_ON_LOGIN`, the guest's data is merged into the account, the guest is "
        "deleted, and the body carries `merged_from`, as for a password login."
    ),
    responses={
        200: {"model": SessionOut},
        **responses(
            "invalid_code",
            "code_expired",
            "invalid_request",
            "invalid_json",
            "rate_limited",
            "csrf_rejected",
            "unsupported_media_type",
        ),
    },
    openapi_extra=body_spec(EmailCodeOrTokenIn),
)
async def login_email_verify(
    request: Request,
    session: Session | None = Depends(lenient_session),
    body: EmailCodeOrTokenIn = Depends(json_body(EmailCodeOrTokenIn)),
) -> Response:
    svc = services(request)
    if body.token is not None:
        pair, merged_from = await email_flows.sign_in_by_link(request, svc, session, body.token)
    elif body.email is not None and body.code is not None:
        pair, merged_from = await email_flows.sign_in_by_code(
            request, svc, session, body.email, body.code
        )
    else:
        raise AnonidError("invalid_request", "Send either `email` and `code`, or `token`.")
    extra: dict[str, Any] = {"merged_from": merged_from} if merged_from else {}
    return session_response(request, svc, pair, 200, **extra)


@router.post(
    "/me/email",
    summary="Change the address: a code and link go to the new one",
    description=(
        "Always `202` with the same body: an address another account has (or this one's own) "
        "gets no code and no email, and nothing changes. Asking again ends the earlier codes "
        "and links. Once the new address is confirmed (`/v1/me/email/verify`) the old one is "
        "told; sessions go on."
    ),
    status_code=202,
    responses={
        202: {"model": AcceptedOut},
        **responses(
            "invalid_session",
            "forbidden",
            "invalid_email",
            "invalid_json",
            "rate_limited",
            "csrf_rejected",
            "unsupported_media_type",
        ),
    },
    openapi_extra=body_spec(EmailIn),
)
async def change_email(
    request: Request,
    session: Session = Depends(require_session),
    email: str = Depends(conversion_address),
) -> Response:
    svc = services(request)
    if session.claims.anon:
        raise AnonidError("forbidden", "Only a registered account can do that.")
    await email_flows.send_email_change(request, svc, session, email)
    return private_response(request, svc, CHANGE_ACCEPTED, 202)


@router.post(
    "/me/email/verify",
    summary="Confirm the new address with its code (in a session) or its link (anywhere)",
    description=(
        '`{"code"}` with a session of the account, or `{"token"}` with none. Answers the '
        "user object with the new address."
    ),
    responses={
        200: {"model": User},
        **responses(
            "invalid_code",
            "code_expired",
            "email_taken",
            "invalid_session",
            "forbidden",
            "invalid_request",
            "invalid_json",
            "rate_limited",
            "csrf_rejected",
            "unsupported_media_type",
        ),
    },
    openapi_extra=body_spec(CodeOrTokenIn),
)
async def verify_email_change(
    request: Request, body: CodeOrTokenIn = Depends(json_body(CodeOrTokenIn))
) -> Response:
    svc = services(request)
    if body.token is not None:
        row = await email_flows.change_email_by_link(request, svc, body.token)
    elif body.code is not None:
        session = await require_session(request)
        row = await email_flows.change_email_by_code(request, svc, session, body.code)
    else:
        raise AnonidError("invalid_request", "Send either `code` or `token`.")
    return private_response(request, svc, user_view(row))
