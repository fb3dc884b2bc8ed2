"""How the outbox worker schedules deliveries and talks SMTP: free slots are refilled at once,
connections are reused safely, and the common email is written without the email package.

Ordering is proven with events (a server that holds one message until the test releases it),
never with timings, so a loaded machine can slow these tests down but not fail them.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.ext.asyncio import AsyncEngine

from app.outbox.enqueue import render_email
from app.outbox.mail import (
    SmtpSender,
    SmtpTarget,
)
from tests.conftest import make_settings
from tests.mailserver import free_port
from tests.outbox_support import address, enqueue, outbox_row, running_worker
from tests.outbox_support import until as until_true


class Gate:
    """An aiosmtpd handler that holds the messages to ``held`` recipients until ``release()``.

    ``accepted`` lists (recipient, peer) in the order the server answered 250. ``refuse_mail_after``
    answers MAIL FROM with 421 on a connection that already carried that many messages.
    """

    def __init__(self, held: set[str] | None = None, refuse_mail_after: int | None = None) -> None:
        self.held = held or set()
        self.refuse_mail_after = refuse_mail_after
        self.holding = threading.Event()  # a held message reached DATA
        self.released = threading.Event()
        self.accepted: list[tuple[str, Any]] = []
        self.per_peer: dict[Any, int] = {}

    def release(self) -> None:
        self.released.set()

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if (
            self.refuse_mail_after is not None
            and self.per_peer.get(session.peer, 0) >= self.refuse_mail_after
        ):
            return "421 4.7.0 too many messages on this connection"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        rcpt = envelope.rcpt_tos[0]
        if rcpt in self.held:
            self.holding.set()
            await asyncio.get_running_loop().run_in_executor(None, self.released.wait, 60)
        self.accepted.append((rcpt, session.peer))
        self.per_peer[session.peer] = self.per_peer.get(session.peer, 0) + 1
        return "250 OK"

    def recipients(self) -> list[str]:
        return [rcpt for rcpt, _ in self.accepted]


def start_gate(gate: Gate) -> tuple[str, Controller]:
    port = free_port()
    controller = Controller(gate, hostname="127.0.0.1", port=port)
    controller.start()
    return f"smtp://127.0.0.1:{port}", controller


async def wait_event(event: threading.Event, timeout: float = 30.0) -> None:
    assert await asyncio.to_thread(event.wait, timeout), "the SMTP server never got there"


async def wait_accepted(gate: Gate, recipient: str, timeout: float = 30.0) -> None:
    async def accepted() -> bool:
        return recipient in gate.recipients()

    await until_true(accepted, timeout=timeout)


async def test_a_message_queued_during_a_slow_delivery_is_not_held_behind_it(
    db: AsyncEngine, private_url: str
) -> None:
    settings = make_settings(private_url)
    slow, quick = address(), address()
    gate = Gate(held={slow})
    url, controller = start_gate(gate)
    try:
        async with running_worker(db, settings, smtp_url=url):
            await enqueue(db, settings, slow)
            await wait_event(gate.holding)
            # The slow email is mid-DATA and stays there until released: the quick one, queued
            # now, must go out on another connection while it waits.
            await enqueue(db, settings, quick)
            await wait_accepted(gate, quick)
            assert gate.recipients() == [quick]
            gate.release()
            await wait_accepted(gate, slow)
    finally:
        gate.release()
        controller.stop()
    assert sorted(gate.recipients()) == sorted([slow, quick])


async def test_a_wake_up_that_comes_while_every_slot_is_busy_is_served_when_one_frees(
    db: AsyncEngine, private_url: str
) -> None:
    settings = make_settings(private_url)
    slow, queued = address(), address()
    gate = Gate(held={slow})
    url, controller = start_gate(gate)
    try:
        # One slot and a timer far beyond the test's patience: only the remembered wake-up can
        # deliver the second email once the first is done.
        async with running_worker(
            db, settings, smtp_url=url, concurrency=1, poll_interval=600.0
        ) as worker:
            await enqueue(db, settings, slow)
            await wait_event(gate.holding)
            [queued_id] = await enqueue(db, settings, queued)

            async def noticed() -> bool:
                return worker._wake.is_set()

            await until_true(noticed)
            assert (await outbox_row(db, queued_id)).attempts == 0  # not claimed: no free slot
            gate.release()
            await wait_accepted(gate, queued)
    finally:
        gate.release()
        controller.stop()
    assert gate.recipients() == [slow, queued]


async def test_consecutive_emails_share_one_smtp_connection(
    db: AsyncEngine, private_url: str
) -> None:
    settings = make_settings(private_url)
    gate = Gate()
    url, controller = start_gate(gate)
    recipients = [address() for _ in range(3)]
    try:
        async with running_worker(db, settings, smtp_url=url):
            for recipient in recipients:
                [row_id] = await enqueue(db, settings, recipient)
                await wait_accepted(gate, recipient)

                async def recorded(row_id: int = row_id) -> bool:
                    return (await outbox_row(db, row_id)).sent_at is not None

                await until_true(recorded)
    finally:
        controller.stop()
    assert gate.recipients() == recipients
    assert len({peer for _, peer in gate.accepted}) == 1


async def test_a_reused_connection_refused_before_data_is_replaced_and_the_email_sent_once() -> (
    None
):
    gate = Gate(refuse_mail_after=1)
    url, controller = start_gate(gate)
    sender = SmtpSender(SmtpTarget.parse(url), keep=1)
    settings = make_settings("postgresql://unused@127.0.0.1/unused")
    first, second = address(), address()
    try:
        for recipient in (first, second):
            await sender.send(
                render_email(
                    settings,
                    "password_changed",
                    recipient,
                    {"reset_request_url": "https://anonid.test/account/reset"},
                )
            )
    finally:
        sender.close_idle()
        controller.stop()
    # The kept connection answered 421 to MAIL FROM: nothing of the second email was sent on it,
    # so it went out once, on a new connection, within the same attempt.
    assert gate.recipients() == [first, second]
    assert gate.accepted[0][1] != gate.accepted[1][1]


async def test_a_connection_closed_by_the_server_while_idle_is_not_reused(
    db: AsyncEngine, private_url: str
) -> None:
    settings = make_settings(private_url)
    gate = Gate()
    port = free_port()
    url = f"smtp://127.0.0.1:{port}"
    controller = Controller(gate, hostname="127.0.0.1", port=port)
    controller.start()
    first, second = address(), address()
    try:
        async with running_worker(db, settings, smtp_url=url):
            await enqueue(db, settings, first)
            await wait_accepted(gate, first)
            # The server goes away and comes back: the kept connection is dead.
            controller.stop()
            controller = Controller(gate, hostname="127.0.0.1", port=port)
            controller.start()
            [row_id] = await enqueue(db, settings, second)
            await wait_accepted(gate, second)

            async def recorded() -> bool:
                return (await outbox_row(db, row_id)).sent_at is not None

            await until_true(recorded)
    finally:
        controller.stop()
    assert gate.recipients() == [first, second]
    assert (await outbox_row(db, row_id)).attempts == 1


async def test_a_delivery_that_cannot_be_recorded_at_once_is_recorded_later_and_not_resent(
    db: AsyncEngine, private_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.outbox import worker as worker_module

    real_mark_sent = worker_module.mark_sent
    refused: list[int] = []

    async def blip_once(conn: Any, rows: Any) -> None:
        if not refused:
            refused.append(len(rows))
            raise ConnectionError("the database is briefly away")
        await real_mark_sent(conn, rows)

    monkeypatch.setattr(worker_module, "mark_sent", blip_once)
    settings = make_settings(private_url)
    gate = Gate()
    url, controller = start_gate(gate)
    recipient = address()
    try:
        async with running_worker(db, settings, smtp_url=url):
            [row_id] = await enqueue(db, settings, recipient)
            await wait_accepted(gate, recipient)

            async def recorded() -> bool:
                return (await outbox_row(db, row_id)).sent_at is not None

            await until_true(recorded)
            # Another row goes through the same worker: the first is not sent again meanwhile.
            control = address()
            await enqueue(db, settings, control)
            await wait_accepted(gate, control)
    finally:
        controller.stop()
    assert refused == [1]
    assert gate.recipients() == [recipient, control]
    assert (await outbox_row(db, row_id)).attempts == 1
