"""Email delivery: a MIME message from an outbox payload, sent with aiosmtplib.

``ANONID_SMTP_URL`` schemes (CONTRACT §3): ``smtp://host:port`` (plain), ``smtp+starttls://
user:pass@host:port`` (upgraded with STARTTLS before AUTH) and ``smtps://user:pass@host:port``
(TLS from the first byte). Certificates are verified against the system trust store unless the
caller passes its own ``ssl.SSLContext`` (a private CA).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib

HEADER_POLICY = email_policy.SMTP.clone(max_line_length=998)
DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
SEND_TIMEOUT = 30.0


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
    return msg


async def send_email(
    target: SmtpTarget,
    payload: dict[str, Any],
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Hand one email to the SMTP server; raises on any refusal, TLS or network failure."""
    message = build_message(payload)
    client = aiosmtplib.SMTP(
        hostname=target.host,
        port=target.port,
        username=target.username,
        password=target.password,
        use_tls=target.scheme == "smtps",
        # Plain smtp:// stays plain: no opportunistic upgrade that a misconfigured server could fail.
        start_tls=target.scheme == "smtp+starttls",
        tls_context=ssl_context,
        timeout=SEND_TIMEOUT,
    )
    try:
        await client.connect()
        # Flattened here because aiosmtplib would re-fold headers with its own policy.
        await client.sendmail(
            parseaddr(payload["from"])[1],
            [parseaddr(payload["to"])[1]],
            message.as_bytes(policy=HEADER_POLICY),
        )
    except BaseException:
        # Drop the connection at once. aiosmtplib.send() would first wait (up to SEND_TIMEOUT)
        # for a polite QUIT, which held a cancelled worker, and so a SIGTERM, for 30 s.
        client.close()
        raise
    try:
        await client.quit()
    except aiosmtplib.SMTPException:
        pass  # the message was accepted; a failed goodbye changes nothing
    finally:
        client.close()
