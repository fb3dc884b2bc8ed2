"""Email delivery: a MIME message from an outbox payload, sent with aiosmtplib.

``ANONID_SMTP_URL`` schemes (CONTRACT §3): ``smtp://host:port`` (plain), ``smtp+starttls://
user:pass@host:port`` (upgraded with STARTTLS before AUTH) and ``smtps://user:pass@host:port``
(TLS from the first byte). Certificates are verified against the system trust store unless the
caller passes its own ``ssl.SSLContext`` (a private CA).

An address with a non-ASCII local part (domains are ASCII A-labels once normalised) is sent with
SMTPUTF8 and UTF-8 headers; a server that does not offer it refuses such an email, which is why
``POST /v1/me/conversion`` refuses those addresses unless ``offers_smtputf8`` said yes.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib

HEADER_POLICY = email_policy.SMTP.clone(max_line_length=998)
UTF8_HEADER_POLICY = email_policy.SMTPUTF8.clone(max_line_length=998)
DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
SEND_TIMEOUT = 30.0
PROBE_TIMEOUT = 3.0

_local_hostname: str | None = None


async def local_hostname() -> str:
    """This host's name for EHLO, looked up once per process.

    aiosmtplib would otherwise run ``socket.getfqdn()`` in a thread for every connection: a
    thread hop and a resolver call ahead of every email.
    """
    global _local_hostname
    if _local_hostname is None:
        _local_hostname = await asyncio.to_thread(socket.getfqdn)
    return _local_hostname


@dataclass(frozen=True)
class SmtpTarget:
    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(
                "SMTP URL must look like smtp://host:port, smtp+starttls:// or smtps://"
            )
        return cls(
            scheme=parts.scheme,
            host=parts.hostname,
            port=parts.port or DEFAULT_PORTS[parts.scheme],
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def describe(self) -> str:
        """Where mail goes, without the password (for logs)."""
        return f"{self.scheme}://{self.host}:{self.port}"


def build_message(payload: dict[str, Any]) -> EmailMessage:
    """The email of an outbox payload: text and HTML alternatives, its own Message-ID."""
    # No header folding: a folded Message-ID is legal but trips up naive parsers (and tests).
    msg = EmailMessage(policy=HEADER_POLICY)
    msg["From"] = payload["from"]
    msg["To"] = payload["to"]
    msg["Subject"] = payload["subject"]
    msg["Message-ID"] = payload["message_id"]
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    # RFC 3834: tells auto-responders not to answer.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(payload["text"])
    msg.add_alternative(payload["html"], subtype="html")
    # After the parts: set_content and add_alternative move Content-* headers into a part.
    if payload.get("language"):
        msg["Content-Language"] = payload["language"]
    return msg


def message_bytes(payload: dict[str, Any], *, utf8: bool = False) -> bytes:
    """The email of an outbox payload as sent: what ``build_message`` makes, CRLF lines; with
    ``utf8`` (an SMTPUTF8 transaction) addresses in headers stay UTF-8, as RFC 6532 wants."""
    # Flattened here because aiosmtplib would re-fold headers with its own policy.
    return build_message(payload).as_bytes(policy=UTF8_HEADER_POLICY if utf8 else HEADER_POLICY)


class _Client(aiosmtplib.SMTP):
    """An SMTP connection that knows whether any message data was sent on it."""

    data_started = False
    sent = 0  # messages accepted on this connection

    async def data(self, *args: Any, **kwargs: Any) -> aiosmtplib.SMTPResponse:
        self.data_started = True
        return await super().data(*args, **kwargs)


async def _goodbye(client: aiosmtplib.SMTP) -> None:
    try:
        await client.quit()
    except aiosmtplib.SMTPException:
        pass  # the messages were accepted; a failed goodbye changes nothing
    finally:
        client.close()


class SmtpSender:
    """Sends emails to one SMTP target, keeping up to ``keep`` idle connections for the next ones.

    Reusing a connection saves the TCP (and TLS) handshake, the greeting, EHLO, AUTH and QUIT of
    every email. A connection is reused only while the server keeps it open, for at most
    ``REUSE_SECONDS`` of idleness and ``REUSE_MESSAGES`` messages. If a reused connection fails
    before any message data was sent (typically a server that dropped it while idle), the email
    is sent again on a new connection: nothing of it was delivered, so nothing can be doubled.
    Any other failure closes the connection and raises, as for a new one.
    """

    REUSE_SECONDS = 10.0
    REUSE_MESSAGES = 100

    def __init__(
        self, target: SmtpTarget, *, ssl_context: ssl.SSLContext | None = None, keep: int = 0
    ) -> None:
        self.target = target
        self.ssl_context = ssl_context
        self.keep = keep
        self._idle: list[tuple[_Client, float]] = []  # most recently used last

    async def _connect(self, io_timeout: float = SEND_TIMEOUT) -> _Client:
        target = self.target
        client = _Client(
            hostname=target.host,
            port=target.port,
            username=target.username,
            password=target.password,
            use_tls=target.scheme == "smtps",
            # Plain smtp:// stays plain: no opportunistic upgrade a misconfigured server could fail.
            start_tls=target.scheme == "smtp+starttls",
            tls_context=self.ssl_context,
            timeout=io_timeout,
            local_hostname=await local_hostname(),
        )
        try:
            await client.connect()
        except BaseException:
            client.close()
            raise
        return client

    def _reusable(self) -> _Client | None:
        now = time.monotonic()
        while self._idle:
            client, since = self._idle.pop()
            if client.is_connected and now - since < self.REUSE_SECONDS:
                return client
            client.close()
        return None

    async def send(self, payload: dict[str, Any]) -> None:
        """Hand one email to the SMTP server; raises on any refusal, TLS or network failure."""
        sender, recipients = parseaddr(payload["from"])[1], [parseaddr(payload["to"])[1]]
        utf8 = not (sender + recipients[0]).isascii()
        message = message_bytes(payload, utf8=utf8)
        # aiosmtplib refuses (SMTPNotSupported) when the server does not offer SMTPUTF8.
        options = ["SMTPUTF8"] if utf8 else []
        client = self._reusable()
        if client is not None:
            try:
                await client.sendmail(sender, recipients, message, mail_options=options)
            except asyncio.CancelledError:
                client.close()
                raise
            except Exception:
                client.close()
                if client.data_started:
                    raise  # the server may have the message: the retry policy decides
                client = None  # nothing was sent: a new connection tries again at once
        if client is None:
            client = await self._connect()
            try:
                await client.sendmail(sender, recipients, message, mail_options=options)
            except BaseException:
                # Drop the connection at once. A polite QUIT could wait up to SEND_TIMEOUT, which
                # held a cancelled worker, and so a SIGTERM, for 30 s.
                client.close()
                raise
        client.data_started = False
        client.sent += 1
        if len(self._idle) < self.keep and client.sent < self.REUSE_MESSAGES:
            self._idle.append((client, time.monotonic()))
        else:
            await _goodbye(client)

    def close_idle(self, older_than: float = 0.0) -> None:
        """Drop idle connections unused for ``older_than`` seconds (all of them by default)."""
        now = time.monotonic()
        keep = [(c, t) for c, t in self._idle if now - t < older_than and c.is_connected]
        for client, since in self._idle:
            if (client, since) not in keep:
                client.close()
        self._idle = keep


async def send_email(
    target: SmtpTarget,
    payload: dict[str, Any],
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Hand one email to the SMTP server on a connection of its own (see ``SmtpSender``)."""
    await SmtpSender(target, ssl_context=ssl_context).send(payload)


async def offers_smtputf8(
    target: SmtpTarget,
    *,
    ssl_context: ssl.SSLContext | None = None,
    within: float = PROBE_TIMEOUT,
) -> bool:
    """Whether the server offers SMTPUTF8 to this service: its EHLO answer after TLS and AUTH,
    as ``SmtpSender`` would see it. Raises when it cannot be asked ``within`` seconds."""
    async with asyncio.timeout(within):
        client = await SmtpSender(target, ssl_context=ssl_context)._connect(within)
        try:
            if client.last_ehlo_response is None:  # plain smtp:// connects without EHLO
                await client.ehlo()
            return client.supports_extension("smtputf8")
        finally:
            await _goodbye(client)
