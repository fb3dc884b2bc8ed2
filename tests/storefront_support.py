"""Helpers for the storefront example: import path, a real JWKS server, the storefront process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

# On pytest's path too (``pythonpath`` in pyproject.toml), so tests can import ``storefront``.
STOREFRONT_DIR = Path(__file__).resolve().parent.parent / "examples" / "storefront"


class JwksServer:
    """A real HTTP server publishing a key set the test controls, and counting the fetches."""

    def __init__(self, port: int) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class StorefrontProcess:
    """``python -m storefront`` in the background, waiting until it answers."""

    def __init__(self, port: int, env: dict[str, str], log: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "storefront", "--port", str(port)],
            cwd=STOREFRONT_DIR,
            env=env,
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
