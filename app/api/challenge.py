"""``GET /v1/challenge`` (CONTRACT §16): an ALTCHA proof-of-work challenge for a new guest."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.deps import services
from app.api.errors import responses
from app.api.responses import json_response
from app.api.schemas import ChallengeOut
from app.errors import AnonidError
from app.hooks import challenge

router = APIRouter(prefix="/v1")


@router.get(
    "/challenge",
    summary="An ALTCHA challenge to solve before POST /v1/anonymous",
    description=(
        "Only with `ANONID_ANONYMOUS_CHALLENGE=altcha`. Solve it (the `altcha` widget or "
        "libraries, or any SHA-256 loop: find `number` ≤ `maxnumber` with "
        "`SHA-256(salt + number) = challenge`) and send "
        '`X-Anonid-Challenge: base64({"algorithm","challenge","number","salt","signature"})`. '
        "A challenge expires after 10 minutes and its solution makes one account."
    ),
    responses={200: {"model": ChallengeOut}, **responses("not_found")},
)
async def new_challenge(request: Request) -> Response:
    svc = services(request)
    if svc.settings.anonymous_challenge != "altcha":
        raise AnonidError("not_found", "Challenges are off (ANONID_ANONYMOUS_CHALLENGE).")
    key = svc.server_secrets[challenge.KEY_NAME]
    return json_response(challenge.issue(key, svc.settings.challenge_max_number))
