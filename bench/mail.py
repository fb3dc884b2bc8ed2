"""The SMTP server the email-latency run measures against: aiosmtpd in its own thread.

It records, per recipient, the wall-clock time at which it accepted each message (the moment it
answers DATA with 250), and keeps the message for link extraction.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from aiosmtpd.controller import Controller


class _Record:
    def __init__(self, catcher: MailCatcher) -> None:
        self.catcher = catcher

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        accepted = time.time()
        with self.catcher.lock:
            for rcpt in envelope.rcpt_tos:
                self.catcher.accepted.setdefault(rcpt.lower(), []).append(accepted)
                self.catcher.bodies[rcpt.lower()] = envelope.content
        return "250 Message accepted for delivery"


class MailCatcher:
    def __init__(self, port: int) -> None:
        self.port = port
        self.lock = threading.Lock()
        self.accepted: dict[str, list[float]] = {}
        self.bodies: dict[str, bytes] = {}
        self._controller = Controller(_Record(self), hostname="127.0.0.1", port=port)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def first_accept(self, rcpt: str) -> float | None:
        with self.lock:
            times = self.accepted.get(rcpt.lower())
            return times[0] if times else None

    def count(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.accepted.values())
