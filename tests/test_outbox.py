"""The outbox worker against real PostgreSQL and a real aiosmtpd server (CONTRACT §7)."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.outbox.claim import RetryPolicy, claim_due
from app.outbox.enqueue import enqueue_email
from app.outbox.worker import OutboxWorker
from app.platform.db import create_engine
from app.platform.ids import new_id
from tests.conftest import make_settings, running_app
from tests.mailserver import MailServer, html_of, text_of
from tests.outbox_support import (
    FAST,
    address,
    client_context,
    enqueue,
    outbox_row,
    running_worker,
    self_signed,
    server_context,
    settle,
    until,
)
from tests.pgcontrol import PrivatePostgres
from tests.processes import ANONID, clean_env, run


@pytest.fixture
def mail() -> AsyncIterator[MailServer]:
    with MailServer() as server:
        yield server


def to(addr: str):  # type: ignore[no-untyped-def]
    return lambda m: m["To"] == addr


async def test_committed_email_is_delivered_once_with_text_html_and_message_id(
    db: AsyncEngine, mail: MailServer, private_url: str
) -> None:
    settings = make_settings(private_url)
    rolled_back, committed = address(), address()
    async with running_worker(db, settings, smtp_url=mail.url):
        async with db.connect() as conn:
            trans = await conn.begin()
            await enqueue_email(
                conn,
                settings,
                kind="conversion_setup",
                to=rolled_back,
                user_id=None,
                context={"link": "https://anonid.test/account/setup?token=x", "ttl_hours": 24},
            )
            await trans.rollback()
        [row_id] = await enqueue(db, settings, committed)
        msg = await mail.wait_for(to(committed))

        async def recorded() -> bool:
            return (await outbox_row(db, row_id)).sent_at is not None

        await until(recorded)

    assert [m["To"] for m in mail.messages] == [committed]
    assert msg["Message-ID"].startswith("<") and msg["Message-ID"].endswith("@anonid.test>")
    assert msg["From"] == settings.mail_from
    assert msg["Subject"] == "Your password was changed"
    assert msg.get_content_type() == "multipart/alternative"
    assert "https://anonid.test/account/reset" in text_of(msg)
    assert '<a href="https://anonid.test/account/reset"' in html_of(msg)
    row = await outbox_row(db, row_id)
    assert row.attempts == 1 and row.failed_at is None and row.claimed_until is None
    assert row.payload["message_id"] == msg["Message-ID"]
    # The rendered bodies (which carry link tokens) are not kept after delivery.
    assert "text" not in row.payload and "html" not in row.payload


async def test_email_enqueued_while_smtp_is_down_arrives_exactly_once_when_it_returns(
    db: AsyncEngine, mail: MailServer, private_url: str
) -> None:
    settings = make_settings(private_url)
    mail.stop()
    recipient = address()
    async with running_worker(db, settings, smtp_url=mail.url):
        [row_id] = await enqueue(db, settings, recipient)

        async def retried() -> bool:
            row = await outbox_row(db, row_id)
            return row.attempts >= 2 and row.last_error is not None

        await until(retried)
        row = await outbox_row(db, row_id)
        assert row.sent_at is None and row.failed_at is None
        assert row.next_attempt_at > row.created_at

        mail.start()
        await mail.wait_for(to(recipient))

        async def recorded() -> bool:
            return (await outbox_row(db, row_id)).sent_at is not None

        await until(recorded)
        # One more pass over the outbox after the row was recorded as sent: nothing is resent.
        [control] = await enqueue(db, settings, address())

        async def control_recorded() -> bool:
            return (await outbox_row(db, control)).sent_at is not None

        await until(control_recorded)

    assert len(mail.messages) == 2
    assert [m["To"] for m in mail.messages].count(recipient) == 1


async def test_two_workers_send_each_of_many_emails_exactly_once(
    db: AsyncEngine, mail: MailServer, private_url: str
) -> None:
    settings = make_settings(private_url)
    other_engine = create_engine(private_url, pool_size=5)
    recipients = [address() for _ in range(40)]
    try:
        async with (
            running_worker(db, settings, smtp_url=mail.url, batch_size=3),
            running_worker(other_engine, settings, smtp_url=mail.url, batch_size=3),
        ):
            ids = await enqueue(db, settings, *recipients)

            async def all_recorded() -> bool:
                async with db.connect() as conn:
                    left = await conn.scalar(
                        sa.text(
                            "SELECT count(*) FROM outbox WHERE id = ANY(:ids) AND sent_at IS NULL"
                        ),
                        {"ids": ids},
                    )
                return left == 0

            await until(all_recorded, timeout=60)
    finally:
        await other_engine.dispose()

    assert sorted(m["To"] for m in mail.messages) == sorted(recipients)
    assert len({m["Message-ID"] for m in mail.messages}) == len(recipients)
    async with db.connect() as conn:
        attempts = await conn.scalar(
            sa.text("SELECT sum(attempts) FROM outbox WHERE id = ANY(:ids)"), {"ids": ids}
        )
    assert attempts == len(recipients)


async def test_row_is_marked_failed_after_the_retry_window_and_never_sent(
    db: AsyncEngine, mail: MailServer, private_url: str
) -> None:
    settings = make_settings(private_url)
    policy = RetryPolicy(
        lease=dt.timedelta(seconds=30),
        first_delay=dt.timedelta(seconds=0.1),
        max_delay=dt.timedelta(seconds=0.2),
        window=dt.timedelta(seconds=1),
    )
    mail.stop()
    doomed = address()
    async with running_worker(db, settings, smtp_url=mail.url, policy=policy) as worker:
        [row_id] = await enqueue(db, settings, doomed)

        async def failed() -> bool:
            return (await outbox_row(db, row_id)).failed_at is not None

        await until(failed)
        row = await outbox_row(db, row_id)
        assert row.attempts >= 2 and row.sent_at is None
        assert row.failed_at >= row.created_at + dt.timedelta(seconds=1)

        mail.start()
        control = address()
        await enqueue(db, settings, control)
        await mail.wait_for(to(control))
        worker.wake()
        await settle(worker)

    assert doomed not in [m["To"] for m in mail.messages]
    assert (await outbox_row(db, row_id)).sent_at is None


def test_the_default_retry_window_is_at_least_24_hours() -> None:
    policy = RetryPolicy()
    assert policy.window >= dt.timedelta(hours=24)
    delays = [policy.delay(n) for n in range(1, 40)]
    assert all(d <= policy.max_delay for d in delays)
    assert delays[0] < delays[5]  # exponential, not constant


async def test_a_crashed_workers_claim_expires_and_the_row_is_retried(
    db: AsyncEngine, mail: MailServer, private_url: str
) -> None:
    settings = make_settings(private_url)
    recipient = address()
    [row_id] = await enqueue(db, settings, recipient)
    # A worker claims the row and dies before sending: only its lease is left behind.
    short = RetryPolicy(lease=dt.timedelta(seconds=1))
    async with db.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        [claimed] = await claim_due(conn, short, ["email"])
    assert claimed.id == row_id

    assert (await outbox_row(db, row_id)).claimed_until == claimed.lease

    async with running_worker(db, settings, smtp_url=mail.url):
        await mail.wait_for(to(recipient))

        async def recorded() -> bool:
            return (await outbox_row(db, row_id)).sent_at is not None

        await until(recorded)

    row = await outbox_row(db, row_id)
    assert row.attempts == 2
    assert [m["To"] for m in mail.messages].count(recipient) == 1


async def test_a_stopping_worker_hands_its_claims_back_at_once(
    db: AsyncEngine, mail: MailServer, private_url: str
) -> None:
    settings = make_settings(private_url)
    connected = asyncio.Event()

    # An SMTP server that accepts the connection and never greets: the send hangs mid-delivery.
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        await reader.read()  # until the worker hangs up
        writer.close()

    tarpit = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = tarpit.sockets[0].getsockname()[1]
    recipient = address()
    try:
        worker = OutboxWorker(db, settings, smtp_url=f"smtp://127.0.0.1:{port}", policy=FAST)
        task = asyncio.create_task(worker.run())
        [row_id] = await enqueue(db, settings, recipient)
        await asyncio.wait_for(connected.wait(), 20)
        leased = await outbox_row(db, row_id)
        assert leased.claimed_until is not None and leased.attempts == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        tarpit.close()

    row = await outbox_row(db, row_id)
    assert row.claimed_until is None and row.attempts == 0 and row.sent_at is None
    # Another worker takes it over without waiting for a lease to run out.
    async with running_worker(db, settings, smtp_url=mail.url):
        await mail.wait_for(to(recipient))


async def test_worker_wakes_on_notify_without_waiting_for_its_timer(
    db: AsyncEngine, mail: MailServer, private_url: str
) -> None:
    settings = make_settings(private_url)
    async with running_worker(db, settings, smtp_url=mail.url, poll_interval=60.0) as worker:
        assert worker.idle.is_set()
        recipient = address()
        await enqueue(db, settings, recipient)
        # Well inside the 60 s timer: only the NOTIFY can have woken it.
        await mail.wait_for(to(recipient), timeout=15)


async def test_starttls_with_credentials_delivers_over_a_verified_connection(
    db: AsyncEngine, private_url: str, tmp_path: Path
) -> None:
    settings = make_settings(private_url)
    cert, key = self_signed(tmp_path)
    with MailServer(
        tls="starttls", ssl_context=server_context(cert, key), credentials=("mailer", "s3cr:t")
    ) as server:
        assert server.url.startswith("smtp+starttls://mailer:")
        recipient = address()
        url = f"smtp+starttls://mailer:s3cr%3At@127.0.0.1:{server.port}"
        async with running_worker(db, settings, smtp_url=url, ssl_context=client_context(cert)):
            await enqueue(db, settings, recipient)
            msg = await server.wait_for(to(recipient))
    assert msg["Subject"] == "Your password was changed"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_smtps_with_credentials_delivers(
    db: AsyncEngine, private_url: str, tmp_path: Path
) -> None:
    settings = make_settings(private_url)
    cert, key = self_signed(tmp_path)
    with MailServer(
        tls="smtps", ssl_context=server_context(cert, key), credentials=("mailer", "pw")
    ) as server:
        recipient = address()
        async with running_worker(
            db, settings, smtp_url=server.url, ssl_context=client_context(cert)
        ):
            await enqueue(db, settings, recipient)
            await server.wait_for(to(recipient))
    assert len(server.messages) == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_an_untrusted_certificate_is_refused_by_default(
    db: AsyncEngine, private_url: str, tmp_path: Path
) -> None:
    settings = make_settings(private_url)
    cert, key = self_signed(tmp_path)
    with MailServer(
        tls="smtps", ssl_context=server_context(cert, key), credentials=("mailer", "pw")
    ) as server:
        async with running_worker(db, settings, smtp_url=server.url):
            [row_id] = await enqueue(db, settings, address())

            async def refused() -> bool:
                row = await outbox_row(db, row_id)
                return row.last_error is not None

            await until(refused)
    assert "CERTIFICATE_VERIFY_FAILED" in (await outbox_row(db, row_id)).last_error
    assert server.messages == []


async def test_wrong_smtp_credentials_are_retried_not_lost(
    db: AsyncEngine, private_url: str, tmp_path: Path
) -> None:
    settings = make_settings(private_url)
    cert, key = self_signed(tmp_path)
    with MailServer(
        tls="starttls", ssl_context=server_context(cert, key), credentials=("mailer", "right")
    ) as server:
        url = f"smtp+starttls://mailer:wrong@127.0.0.1:{server.port}"
        async with running_worker(db, settings, smtp_url=url, ssl_context=client_context(cert)):
            [row_id] = await enqueue(db, settings, address())

            async def retried() -> bool:
                return (await outbox_row(db, row_id)).attempts >= 2

            await until(retried)
    row = await outbox_row(db, row_id)
    assert row.sent_at is None and row.failed_at is None and "535" in row.last_error
    assert server.messages == []


async def test_worker_survives_a_database_outage_and_delivers_after_it(
    tmp_path: Path, mail: MailServer
) -> None:
    pg = await asyncio.to_thread(PrivatePostgres, tmp_path / "pg")
    try:
        from app.platform.db import upgrade_to_head

        await asyncio.to_thread(upgrade_to_head, pg.url)
        settings = make_settings(pg.url)
        engine = create_engine(pg.url, pool_size=2)
        try:
            async with running_worker(engine, settings, smtp_url=mail.url) as worker:
                await asyncio.to_thread(pg.stop)

                async def lost() -> bool:
                    return not worker.listening.is_set()

                await until(lost, timeout=60)
                worker.wake()  # a delivery pass against the dead database must not kill it
                await asyncio.sleep(0.5)
                await asyncio.to_thread(pg.start)
                recipient = address()

                async def enqueued() -> bool:
                    try:
                        await enqueue(engine, settings, recipient)
                    except Exception:
                        return False
                    return True

                await until(enqueued, timeout=60)
                await mail.wait_for(to(recipient), timeout=60)
        finally:
            await engine.dispose()
    finally:
        await asyncio.to_thread(pg.close)


async def test_scheduled_cull_runs_in_the_worker(db: AsyncEngine, private_url: str) -> None:
    settings = make_settings(private_url, cull_interval_minutes=1)
    stale, fresh = new_id(), new_id()
    async with db.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO users (id, username, is_anonymous, updated_at) VALUES"
                " (:stale, :u1, true, now() - interval '400 days'), (:fresh, :u2, true, now())"
            ),
            {"stale": stale, "fresh": fresh, "u1": f"g-{stale}", "u2": f"g-{fresh}"},
        )

    async def culled() -> bool:
        async with db.connect() as conn:
            ids = (
                await conn.execute(
                    sa.text("SELECT id FROM users WHERE id IN (:a, :b)"), {"a": stale, "b": fresh}
                )
            ).scalars()
            return list(ids) == [fresh]

    async with running_worker(db, settings):
        await until(culled)


async def test_app_runs_the_worker_in_process_when_run_worker_is_set(
    db: AsyncEngine, mail: MailServer, private_url: str
) -> None:
    settings = make_settings(private_url, run_worker=True, smtp_url=mail.url)
    recipient = address()
    async with running_app(settings) as app:
        tasks = {t.get_name(): t for t in asyncio.all_tasks()}
        worker_task = tasks["anonid-worker"]
        await enqueue(db, settings, recipient)
        await mail.wait_for(to(recipient))
    # Shutting the app down stops its worker.
    assert worker_task.done()
    assert app.state.services.settings.run_worker


async def test_app_without_run_worker_sends_nothing(
    db: AsyncEngine, mail: MailServer, private_url: str
) -> None:
    settings = make_settings(private_url, run_worker=False, smtp_url=mail.url)
    async with running_app(settings):
        assert "anonid-worker" not in {t.get_name() for t in asyncio.all_tasks()}
        [row_id] = await enqueue(db, settings, address())
    assert (await outbox_row(db, row_id)).attempts == 0


async def test_anonid_worker_command_delivers_and_stops_on_sigterm(
    db: AsyncEngine, mail: MailServer, private_url: str, tmp_path: Path
) -> None:
    env = clean_env(
        ANONID_DATABASE_URL=private_url,
        ANONID_SMTP_URL=mail.url,
        ANONID_DATA_DIR=str(tmp_path / "data"),
        ANONID_CULL_INTERVAL_MINUTES="0",
    )
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [ANONID, "worker"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            recipient = address()
            await enqueue(db, make_settings(private_url), recipient)
            await mail.wait_for(to(recipient), timeout=60)
            proc.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.to_thread(proc.wait, 60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"anonid worker ignored SIGTERM for 60 s:\n{log.read_text()}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 0, log.read_text()
    assert "Traceback" not in log.read_text()


def test_anonid_worker_refuses_an_unreachable_database_with_one_line(tmp_path: Path) -> None:
    env = clean_env(
        ANONID_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
        ANONID_SMTP_URL="smtp://127.0.0.1:1",
    )
    result = run(["worker"], cwd=tmp_path, env=env, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("anonid: cannot reach the database")
