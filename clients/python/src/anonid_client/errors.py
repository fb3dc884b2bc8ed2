"""What the client raises. ``InvalidSession`` covers every way a session fails to verify or renew;
its subclasses say when the failure is worth acting on."""

from __future__ import annotations


class InvalidSession(Exception):
    """The token is not (or no longer) a valid anonid session.

    ``set_cookies`` holds anonid's ``Set-Cookie`` headers when a renewal was refused: they clear the
    browser's cookies, so pass them on.
    """

    code = "invalid_session"

    def __init__(self, message: str, *, set_cookies: list[str] | None = None) -> None:
        super().__init__(message)
        self.set_cookies = set_cookies or []


class SessionExpired(InvalidSession):
    """The token has expired but passed every other check: renew the session."""

    code = "session_expired"


class Unavailable(InvalidSession):
    """anonid could not be asked (its keys or a renewal): the session may well be valid."""

    code = "unavailable"


class InvalidWebhook(Exception):
    """A webhook whose signature, timestamp or body does not check out."""
