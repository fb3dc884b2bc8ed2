"""Python helpers for a backend beside anonid: offline session verification, server-side
renewal, an ASGI middleware, a FastAPI dependency (``anonid_client.fastapi``) and webhook checks."""

from anonid_client.asgi import AnonidMiddleware, session_of
from anonid_client.errors import InvalidSession, InvalidWebhook, SessionExpired, Unavailable
from anonid_client.renewal import Renewal
from anonid_client.verifier import CookieSession, SessionVerifier
from anonid_client.webhooks import verify_webhook

__all__ = [
    "AnonidMiddleware",
    "CookieSession",
    "InvalidSession",
    "InvalidWebhook",
    "Renewal",
    "SessionExpired",
    "SessionVerifier",
    "Unavailable",
    "session_of",
    "verify_webhook",
]
