"""Webhook delivery: the event body POSTed to its URL, signed per Standard Webhooks.

A receiver verifies with ``standardwebhooks.Webhook(secret).verify(body, headers)``. The
``webhook-id`` is the event id, the same on every retry, so receivers can drop duplicates; the
timestamp and signature are made at each attempt, since receivers refuse stale timestamps.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from standardwebhooks import Webhook

SEND_TIMEOUT = 10.0


class WebhookRefused(Exception):
    """The receiver answered with something other than 2xx."""


def signed_request(secret: str, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The exact body bytes and the headers that sign them."""
    body = orjson.dumps(payload["body"])
    now = datetime.now(UTC)
    signature = Webhook(secret).sign(payload["webhook_id"], now, body.decode())
    headers = {
        "content-type": "application/json",
        "user-agent": "anonid-webhooks",
        "webhook-id": payload["webhook_id"],
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    return body, headers


async def send_webhook(client: httpx.AsyncClient, secret: str, payload: dict[str, Any]) -> None:
    """POST one event; returns on a 2xx, raises on any other answer or a network error."""
    body, headers = signed_request(secret, payload)
    response = await client.post(payload["url"], content=body, headers=headers)
    if not response.is_success:
        raise WebhookRefused(f"HTTP {response.status_code}")


def webhook_client() -> httpx.AsyncClient:
    # Redirects are not followed: a signed event goes only where the operator pointed it.
    return httpx.AsyncClient(timeout=SEND_TIMEOUT, follow_redirects=False)
