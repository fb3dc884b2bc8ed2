"""The SMTP server the email-latency run measures against: aiosmtpd in a process of its own.

It runs apart from the runner (which is busy sending conversions) so that neither the runner's
event loop nor its GIL delays the SMTP conversation. For every accepted message it appends
``recipient<TAB>unix time`` to a file at the moment it answers DATA with 250.

    python bench/mail.py PORT LOGFILE      # serve until terminated
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


class _Record:
    def __init__(self, log: Any) -> None:
        self.log = log
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        accepted = time.time()
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.log.write(f"{rcpt.lower()}\t{accepted:.6f}\n")
            self.log.flush()
        return "250 Message accepted for delivery"


def serve(port: int, log_path: str) -> None:
    from aiosmtpd.controller import Controller

    with open(log_path, "a") as log:
        controller = Controller(_Record(log), hostname="127.0.0.1", port=port)
        controller.start()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print("ready", flush=True)
        stop.wait()
        controller.stop()


class MailCatcher:
    """Starts ``serve`` in a subprocess; answers when each recipient's message was accepted."""

    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self._accepted: dict[str, float] = {}
        self._offset = 0

    def start(self) -> None:
        self.log_path.touch()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(self.port), str(self.log_path)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the SMTP sink did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def _read(self) -> None:
        with self.log_path.open() as log:
            log.seek(self._offset)
            for line in log:
                if not line.endswith("\n"):
                    break  # half-written; read it next time
                self._offset += len(line.encode())
                rcpt, _, stamp = line.rstrip("\n").partition("\t")
                self._accepted.setdefault(rcpt, float(stamp))

    def first_accept(self, rcpt: str) -> float | None:
        if rcpt.lower() not in self._accepted:
            self._read()
        return self._accepted.get(rcpt.lower())


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2])
