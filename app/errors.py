"""Domain errors. Each carries a code from ``ERRORS``: the one table of codes, statuses and sentences.

``api/errors.py`` turns them into ``{"error", "message"}`` responses and into the OpenAPI document.
The API's messages are English; the hosted pages show the same sentences translated (``N_`` marks
them for the catalogs, ``AnonidError.template`` and ``params`` let a page translate them).
"""

from __future__ import annotations

from typing import Any


def N_(message: str) -> str:
    """Marks ``message`` for the translation catalogs (``app/locales``) without translating it."""
    return message


ERRORS: dict[str, tuple[int, str]] = {
    "invalid_json": (400, N_("The request body is not valid JSON.")),
    "invalid_request": (422, N_("The request body does not have the expected fields and types.")),
    "invalid_token": (400, N_("This link is not valid: it is unknown, already used or cancelled.")),
    "invalid_code": (
        400,
        N_("This code or link is not valid: it is wrong, already used or no longer current."),
    ),
    "invalid_session": (401, N_("The session is missing, ended or no longer valid.")),
    "session_expired": (401, N_("The access token has expired; refresh the session.")),
    "invalid_credentials": (401, N_("The email address or password is not correct.")),
    "invalid_passkey": (400, N_("The passkey could not be verified, so it was not added.")),
    "unauthorized": (401, N_("A valid admin API key is required.")),
    "csrf_rejected": (403, N_("This request came from an origin that is not allowed.")),
    "forbidden": (403, N_("This session may not do that.")),
    "challenge_required": (
        403,
        N_("Solve the challenge from GET /v1/challenge and send it as X-Anonid-Challenge."),
    ),
    "challenge_failed": (
        403,
        N_("The challenge solution is wrong, expired or already used; get a new challenge."),
    ),
    "hook_denied": (403, N_("This was refused by the application.")),
    "not_found": (404, N_("There is nothing here.")),
    "method_not_allowed": (405, N_("This method is not allowed here.")),
    "invalid_return_to": (
        400,
        N_("return_to must be a URL on this service or on an allowed origin of the app."),
    ),
    "already_registered": (409, N_("This account is already registered.")),
    "last_credential": (
        409,
        N_("This is the account's last way to sign in; add another before removing it."),
    ),
    "email_taken": (409, N_("This email address already belongs to another account.")),
    "token_expired": (410, N_("This link has expired; ask for a new one.")),
    "code_expired": (410, N_("This code or link has expired; ask for a new one.")),
    "data_too_large": (413, N_("The profile data would exceed the size limit.")),
    "payload_too_large": (413, N_("The request body is too large.")),
    "unsupported_media_type": (415, N_("Send the body as application/json.")),
    "invalid_data": (422, N_("Profile data must be a JSON object.")),
    "invalid_email": (422, N_("That is not a valid email address.")),
    "weak_password": (422, N_("That password is not accepted.")),
    "rate_limited": (429, N_("Too many requests; try again later.")),
    "internal_error": (500, N_("Something went wrong on our side.")),
    "unavailable": (503, N_("The service is temporarily unavailable; try again shortly.")),
    "not_ready": (503, N_("The service is not ready.")),
    "hook_unavailable": (
        503,
        N_("The application's hook did not answer in time; try again shortly."),
    ),
}


class AnonidError(Exception):
    """An error with a stable code; its HTTP status comes from ``ERRORS``.

    ``message`` may hold ``%(name)s`` placeholders filled from ``params``: ``template`` keeps the
    sentence as written (the catalogs' key), ``message`` is it filled in, in English.
    """

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        if code not in ERRORS:
            raise KeyError(code)
        self.code = code
        self.status = ERRORS[code][0]
        self.template = message or ERRORS[code][1]
        self.params = params or {}
        self.message = self.template % self.params if params else self.template
        self.headers = headers or {}
        super().__init__(f"{code}: {self.message}")


# How a sign-in with a provider ends when it fails: ``return_to?error=<code>`` (CONTRACT §13).
FLOW_ERRORS = frozenset(
    {
        "access_denied",
        "invalid_state",
        "invalid_id_token",
        "provider_error",
        "identity_taken",
        "email_taken",
    }
)


class FlowError(Exception):
    """A provider sign-in that ends at ``return_to?error=<code>`` with nothing changed; ``detail``
    is for the log only (never shown: it may quote the provider)."""

    def __init__(self, code: str, detail: str = "") -> None:
        if code not in FLOW_ERRORS:
            raise KeyError(code)
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}" if detail else code)
