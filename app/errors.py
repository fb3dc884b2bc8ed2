"""Domain errors. Each carries a code from ``ERRORS``: the one table of codes, statuses and sentences.

``api/errors.py`` turns them into ``{"error", "message"}`` responses and into the OpenAPI document.
"""

from __future__ import annotations

ERRORS: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "The request body is not valid JSON."),
    "invalid_request": (422, "The request body does not have the expected fields and types."),
    "invalid_token": (400, "This link is not valid: it is unknown, already used or cancelled."),
    "invalid_session": (401, "The session is missing, ended or no longer valid."),
    "session_expired": (401, "The access token has expired; refresh the session."),
    "invalid_credentials": (401, "The email address or password is not correct."),
    "unauthorized": (401, "A valid admin API key is required."),
    "csrf_rejected": (403, "This request came from an origin that is not allowed."),
    "forbidden": (403, "This session may not do that."),
    "not_found": (404, "There is nothing here."),
    "method_not_allowed": (405, "This method is not allowed here."),
    "already_registered": (409, "This account is already registered."),
    "email_taken": (409, "This email address already belongs to another account."),
    "token_expired": (410, "This link has expired; ask for a new one."),
    "data_too_large": (413, "The profile data would exceed the size limit."),
    "payload_too_large": (413, "The request body is too large."),
    "unsupported_media_type": (415, "Send the body as application/json."),
    "invalid_data": (422, "Profile data must be a JSON object."),
    "invalid_email": (422, "That is not a valid email address."),
    "weak_password": (422, "That password is not accepted."),
    "rate_limited": (429, "Too many requests; try again later."),
    "internal_error": (500, "Something went wrong on our side."),
    "unavailable": (503, "The service is temporarily unavailable; try again shortly."),
    "not_ready": (503, "The service is not ready."),
}


class AnonidError(Exception):
    """An error with a stable code; its HTTP status comes from ``ERRORS``."""

    def __init__(
        self, code: str, message: str | None = None, *, headers: dict[str, str] | None = None
    ) -> None:
        if code not in ERRORS:
            raise KeyError(code)
        self.code = code
        self.status = ERRORS[code][0]
        self.message = message or ERRORS[code][1]
        self.headers = headers or {}
        super().__init__(f"{code}: {self.message}")
