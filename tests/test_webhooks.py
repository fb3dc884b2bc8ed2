"""Webhooks through the outbox: signed per Standard Webhooks, verified by a real receiver, retried."""

from __future__ import annotations

import base64
import secrets

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks import Webhook, WebhookVerificationError

from app.lifecycle.events import record_event
from app.settings import Settings
from tests.conftest import client_for, make_settings, running_app
from tests.outbox_support import Receiver, outbox_row, running_worker, until

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def hook_settings(url: str, receiver: Receiver) -> Settings:
    return make_settings(url, webhook_urls=receiver.url, webhook_secret=SECRET)


async def record(db: AsyncEngine, urls: list[str], user: str = "u1") -> tuple[str, int]:
    async with db.begin() as conn:
        event_id = await record_event(conn, "user.deleted", None, {"id": user}, urls)
        row_id = await conn.scalar(
            sa.text("SELECT id FROM outbox WHERE payload->>'webhook_id' = :e"),
            {"e": str(event_id)},
        )
    return str(event_id), int(row_id)


async def test_event_is_posted_signed_and_verifies_with_standardwebhooks(
    db: AsyncEngine, private_url: str
) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        settings = hook_settings(private_url, receiver)
        async with running_worker(db, settings):
            event_id, row_id = await record(db, settings.webhook_url_list, user="abc")

            async def delivered() -> bool:
                return (await outbox_row(db, row_id)).sent_at is not None

            await until(delivered)
    finally:
        await receiver.stop()

    [(body, headers)] = receiver.received
    event = Webhook(SECRET).verify(body, headers)
    assert event["type"] == "user.deleted" and event["data"] == {"id": "abc"}
    assert headers["webhook-id"] == event_id
    assert headers["content-type"] == "application/json"
    # Signed with another secret, or with the body changed, it does not verify.
    other = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b"abc", b"abd"), headers)


async def test_receiver_that_was_down_gets_the_event_on_retry(
    db: AsyncEngine, private_url: str
) -> None:
    receiver = Receiver()
    settings = hook_settings(private_url, receiver)
    async with running_worker(db, settings):
        event_id, row_id = await record(db, settings.webhook_url_list)

        async def retried() -> bool:
            row = await outbox_row(db, row_id)
            return row.attempts >= 2 and row.last_error is not None

        await until(retried)
        await receiver.start()
        try:

            async def delivered() -> bool:
                return (await outbox_row(db, row_id)).sent_at is not None

            await until(delivered)
        finally:
            await receiver.stop()

    [(body, headers)] = receiver.received
    assert Webhook(SECRET).verify(body, headers)["type"] == "user.deleted"
    assert headers["webhook-id"] == event_id


async def test_receiver_answering_500_gets_the_event_again_until_it_accepts(
    db: AsyncEngine, private_url: str
) -> None:
    receiver = Receiver(statuses=[500, 503])
    await receiver.start()
    try:
        settings = hook_settings(private_url, receiver)
        async with running_worker(db, settings):
            event_id, row_id = await record(db, settings.webhook_url_list)

            async def delivered() -> bool:
                return (await outbox_row(db, row_id)).sent_at is not None

            await until(delivered)
    finally:
        await receiver.stop()

    assert len(receiver.received) == 3 and len(receiver.accepted) == 1
    # Each attempt is freshly signed, and all carry the same id so receivers can deduplicate.
    assert {h["webhook-id"] for _, h in receiver.received} == {event_id}
    body, headers = receiver.accepted[0]
    assert Webhook(SECRET).verify(body, headers)["data"] == {"id": "u1"}
    row = await outbox_row(db, row_id)
    assert row.attempts == 3 and row.failed_at is None


async def test_anonymous_account_created_over_http_reaches_the_receiver(
    db: AsyncEngine, private_url: str
) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        settings = hook_settings(private_url, receiver)
        async with (
            running_worker(db, settings),
            running_app(settings) as app,
            client_for(app) as client,
        ):
            response = await client.post("/v1/anonymous", headers={"X-Anonid-Token": "bearer"})
            assert response.status_code == 201
            user_id = response.json()["user"]["id"]

            async def arrived() -> bool:
                return bool(receiver.accepted)

            await until(arrived)
    finally:
        await receiver.stop()

    body, headers = receiver.accepted[0]
    event = Webhook(SECRET).verify(body, headers)
    assert event["type"] == "user.anonymous_created"
    assert event["data"] == {"id": user_id}
    assert orjson.loads(body) == event
