"""``anonid_client.verify_webhook`` accepts the events a real ``anonid serve`` delivers and refuses
anything changed, replayed late, signed with another secret or malformed."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from anonid_client import InvalidWebhook, verify_webhook

from tests.client_support import anonid_serving
from tests.outbox_support import Receiver

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture(scope="module")
async def delivered(
    private_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, bytes, dict[str, str]]]:
    """A guest made on anonid, and the ``user.anonymous_created`` webhook anonid's worker
    delivered for it (the module's own database: the worker delivers every row it sees)."""
    receiver = Receiver()
    await receiver.start()
    try:
        with anonid_serving(
            tmp_path_factory.mktemp("client-webhooks"),
            private_url,
            ANONID_WEBHOOK_URLS=receiver.url,
            ANONID_WEBHOOK_SECRET=SECRET,
        ) as served:
            r = await asyncio.to_thread(httpx.post, f"{served.base}/v1/anonymous")
            user_id = r.json()["user"]["id"]
            deadline = time.monotonic() + 30
            while not receiver.received and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        assert receiver.received, "anonid delivered no webhook"
        body, headers = receiver.received[0]
        yield user_id, body, headers
    finally:
        await receiver.stop()


async def test_a_delivered_event_verifies_and_is_returned(
    delivered: tuple[str, bytes, dict[str, str]],
) -> None:
    user_id, body, headers = delivered
    event = verify_webhook(SECRET, body, headers)
    assert event["type"] == "user.anonymous_created"
    assert event["data"]["id"] == user_id
    # The body as text works the same; header names in any case.
    upper = {k.upper(): v for k, v in headers.items()}
    assert verify_webhook(SECRET, body.decode(), upper) == event


async def test_a_changed_body_or_another_secret_is_refused(
    delivered: tuple[str, bytes, dict[str, str]],
) -> None:
    _, body, headers = delivered
    with pytest.raises(InvalidWebhook):
        verify_webhook(SECRET, body.replace(b"anonymous_created", b"deleted"), headers)
    other = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with pytest.raises(InvalidWebhook):
        verify_webhook(other, body, headers)


async def test_a_replay_outside_five_minutes_is_refused(
    delivered: tuple[str, bytes, dict[str, str]],
) -> None:
    _, body, headers = delivered
    stale = {**headers, "webhook-timestamp": str(int(time.time()) - 3600)}
    with pytest.raises(InvalidWebhook):
        verify_webhook(SECRET, body, stale)


@pytest.mark.parametrize(
    "change",
    [
        {"webhook-signature": "garbage"},
        {"webhook-signature": "v1,%%%"},
        {"webhook-timestamp": "soon"},
        {"webhook-id": ""},
    ],
)
async def test_malformed_headers_are_a_refusal_not_a_crash(
    delivered: tuple[str, bytes, dict[str, str]], change: dict[str, str]
) -> None:
    _, body, headers = delivered
    with pytest.raises(InvalidWebhook):
        verify_webhook(SECRET, body, {**headers, **change})


async def test_a_body_that_is_not_utf8_is_refused(
    delivered: tuple[str, bytes, dict[str, str]],
) -> None:
    _, _, headers = delivered
    with pytest.raises(InvalidWebhook):
        verify_webhook(SECRET, b"\xff\xfe", headers)


def test_a_secret_that_is_not_a_webhook_secret_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        verify_webhook("", b"{}", {})
