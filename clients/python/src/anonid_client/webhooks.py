"""anonid's webhooks (events such as ``user.merged``), signed per the Standard Webhooks spec."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from standardwebhooks.webhooks import Webhook

from anonid_client.errors import InvalidWebhook


def verify_webhook(secret: str, body: bytes | str, headers: Mapping[str, str]) -> dict[str, Any]:
    """The event (``{"type", "timestamp", "data"}``) when the ``webhook-id``,
    ``webhook-timestamp`` and ``webhook-signature`` headers sign ``body`` with ``secret``
    (anonid's ``ANONID_WEBHOOK_SECRET``, ``whsec_…``) and the timestamp is within five minutes;
    ``InvalidWebhook`` otherwise. Pass the body exactly as received, before any JSON parsing."""
    try:
        hook = Webhook(secret)
    except Exception as exc:
        # A misconfiguration, not a bad request: say so loudly.
        raise ValueError("the webhook secret is not a whsec_… secret") from exc
    try:
        event = hook.verify(body, dict(headers))
    except Exception as exc:
        # The library raises its own error for a bad signature, and ValueError, binascii.Error
        # or UnicodeDecodeError for malformed headers or bodies: all of them are a refusal.
        raise InvalidWebhook(str(exc) or type(exc).__name__) from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise InvalidWebhook("The body is not an anonid event.")
    return event
