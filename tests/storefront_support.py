"""Helpers for the storefront example: its folder, and the storefront as a process of its own."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.client_support import with_client_on_path

# On pytest's path too (``pythonpath`` in pyproject.toml), so tests can import ``storefront``.
STOREFRONT_DIR = Path(__file__).resolve().parent.parent / "examples" / "storefront"


class StorefrontProcess:
    """``python -m storefront`` in the background, waiting until it answers."""

    def __init__(self, port: int, env: dict[str, str], log: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "storefront", "--port", str(port)],
            cwd=STOREFRONT_DIR,
            # The storefront imports anonid_client (clients/python), not installed in the venv.
            env=with_client_on_path(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"storefront exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(self.base + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"storefront not ready in time:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


@contextmanager
def storefront_process(port: int, env: dict[str, str], log: Path) -> Iterator[StorefrontProcess]:
    process = StorefrontProcess(port, env, log)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
