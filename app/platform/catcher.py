"""The local mail catcher: with no ``ANONID_SMTP_URL``, mail goes to an SMTP server on loopback.

``serve`` (and ``anonid worker``) start an aiosmtpd server on 127.0.0.1 and the outbox worker
sends to it through the same aiosmtplib path as to a real server. Each caught message is one
``.eml`` file under ``{ANONID_DATA_DIR}/mail``, so every process of ``serve --workers N`` can show
it at ``/dev/mail``. The newest ``KEEP`` messages are kept.

The serving process tells the app about the catcher through two environment variables (they reach
``serve --workers N`` children too): the catcher's SMTP URL, and the folder to read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from app.settings import Settings

log = logging.getLogger("anonid.catcher")

CATCHER_URL_ENV = "ANONID_CATCHER_SMTP_URL"
CATCHER_DIR_ENV = "ANONID_CATCHER_DIR"
KEEP = 500
HOST = "127.0.0.1"

LINK = re.compile(r"https?://[^\s\"'<>]+")


def mail_dir(settings: Settings) -> Path:
    return settings.data_dir.expanduser().resolve() / "mail"


def effective_smtp_url(settings: Settings) -> str | None:
    """Where this process sends email: the configured server, else the local catcher (if any)."""
    return settings.smtp_url or os.environ.get(CATCHER_URL_ENV) or None


def caught_mail_dir(settings: Settings) -> Path | None:
    """The catcher's folder while the catcher is in use; None when a real SMTP server is set."""
    if settings.smtp_url:
        return None
    value = os.environ.get(CATCHER_DIR_ENV)
    return Path(value) if value else None


class _Store:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        name = f"{time.time_ns():020d}-{secrets.token_hex(4)}.eml"
        tmp = self.directory / ("." + name)
        # Written aside and renamed, so a reader never sees half a message.
        tmp.write_bytes(raw)
        os.replace(tmp, self.directory / name)
        _prune(self.directory)
        return "250 Message caught"


def _prune(directory: Path) -> None:
    for old in sorted(directory.glob("*.eml"), reverse=True)[KEEP:]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class LocalCatcher:
    """An aiosmtpd server on loopback (its own thread) writing each message to ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = 0
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://{HOST}:{self.port}"

    def start(self) -> LocalCatcher:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        # SMTPUTF8 like real servers: mail to a non-ASCII local part is caught, not refused.
        self._controller = Controller(
            _Store(self.directory), hostname=HOST, port=self.port, enable_SMTPUTF8=True
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def environment(self) -> dict[str, str]:
        """What the app processes need to send to and read from this catcher."""
        return {CATCHER_URL_ENV: self.url, CATCHER_DIR_ENV: str(self.directory)}


@dataclass(frozen=True)
class CaughtMail:
    name: str
    received_at: datetime
    sender: str
    to: str
    subject: str
    text: str


def read_caught(directory: Path, limit: int = 100) -> list[CaughtMail]:
    """The caught messages, newest first."""
    caught = []
    for path in sorted(directory.glob("*.eml"), reverse=True)[:limit]:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:  # pruned meanwhile
            continue
        try:
            stamp = int(path.name.split("-", 1)[0])
            msg = message_from_bytes(raw, policy=email_policy.default)
            assert isinstance(msg, EmailMessage)
            part = msg.get_body(preferencelist=("plain",))
            text = str(part.get_content()) if part is not None else ""
        except Exception:  # a stray or mangled file is skipped, never a 500
            log.warning("skipping unreadable caught mail %s", path.name)
            continue
        caught.append(
            CaughtMail(
                name=path.stem,
                received_at=datetime.fromtimestamp(stamp / 1e9, UTC),
                sender=str(msg.get("From", "")),
                to=str(msg.get("To", "")),
                subject=str(msg.get("Subject", "")),
                text=text,
            )
        )
    return caught
