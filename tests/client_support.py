"""Helpers for the client-library tests: a real ``anonid serve``, a JWKS server the test controls,
and the import path of the Python client for the processes the tests start."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.processes import Served, clean_env, free_port

ROOT = Path(__file__).resolve().parent.parent
CLIENT_PYTHON = ROOT / "clients" / "python"
CLIENT_JS = ROOT / "clients" / "js"
PORTS = (18900, 18999)


def with_client_on_path(env: dict[str, str]) -> dict[str, str]:
    """``env`` whose ``PYTHONPATH`` also finds ``anonid_client`` (not installed in the test venv:
    pytest puts it on its own path, ``pythonpath`` in pyproject.toml)."""
    paths = [str(CLIENT_PYTHON / "src"), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


@contextmanager
def anonid_serving(tmp: Path, database_url: str, **settings: str) -> Iterator[Served]:
    """``anonid serve`` on ``database_url`` (plain http, cookies not Secure, generous rate
    limits: the tests make many accounts from one address), ready, stopped at the end."""
    port = free_port(*PORTS)
    base = f"http://127.0.0.1:{port}"
    values = {
        "ANONID_DATABASE_URL": database_url,
        "ANONID_PUBLIC_URL": base,
        "ANONID_COOKIE_SECURE": "false",
        "ANONID_CULL_INTERVAL_MINUTES": "0",
        "ANONID_ANONYMOUS_RATE_LIMIT": "100000/minute",
        "ANONID_LOGIN_RATE_LIMIT": "100000/minute",
        **settings,
    }
    served = Served(tmp, clean_env(**values), port)
    try:
        served.wait_ready()
        yield served
    finally:
        served.stop()


def new_guest(base: str) -> tuple[str, dict[str, str]]:
    """A new guest made by a browser-like call: its id and its two cookies."""
    r = httpx.post(f"{base}/v1/anonymous")
    assert r.status_code == 201, r.text
    return r.json()["user"]["id"], dict(r.cookies)


def new_bearer_guest(base: str) -> dict[str, Any]:
    """A new guest made by an app (``X-Anonid-Token: bearer``): the session body."""
    r = httpx.post(f"{base}/v1/anonymous", headers={"X-Anonid-Token": "bearer"})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


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
        self.base = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
