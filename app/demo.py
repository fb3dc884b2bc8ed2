"""``anonid demo``: anonid and the example storefront side by side, for a first look.

Both listen on 127.0.0.1 on different ports and are reached as ``localhost``: cookies belong to
a host, not a port, so the browser sends anonid's HttpOnly session cookie to the storefront too,
which is how the storefront's backend can read it; and browsers refuse an IP address as a
passkey's RP id, so the host name is what lets the demo offer passkeys. The cookie is not
``Secure`` here because the demo is plain http (browsers treat ``localhost`` as secure for
WebAuthn all the same).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

HOST = "127.0.0.1"  # where both listen
PUBLIC_HOST = "localhost"  # how the browser reaches them (the passkeys' RP id)
STOREFRONT_DIR = Path(__file__).resolve().parent.parent / "examples" / "storefront"
# The storefront's backend imports anonid_client: from this checkout when it is not installed.
CLIENT_DIR = Path(__file__).resolve().parent.parent / "clients" / "python" / "src"


def storefront_available() -> bool:
    return (STOREFRONT_DIR / "storefront" / "app.py").is_file()


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def demo_settings(port: int, storefront_port: int) -> dict[str, str]:
    """The ``ANONID_*`` values the demo needs; the rest (database, data dir) stay the user's."""
    return {
        "ANONID_PUBLIC_URL": f"http://{PUBLIC_HOST}:{port}",
        "ANONID_ALLOWED_ORIGINS": f"http://{PUBLIC_HOST}:{storefront_port}",
        "ANONID_COOKIE_SECURE": "false",
        # The local catcher and its /dev/mail page are the demo's inbox.
        "ANONID_SMTP_URL": "",
        "ANONID_RUN_WORKER": "true",
    }


def start_storefront(port: int, storefront_port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "STOREFRONT_ANONID_URL": f"http://{PUBLIC_HOST}:{port}",
        "STOREFRONT_INBOX_URL": f"http://{PUBLIC_HOST}:{port}/dev/mail",
    }
    if CLIENT_DIR.is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CLIENT_DIR), env.get("PYTHONPATH")]))
    return subprocess.Popen(  # noqa: S603 (our own interpreter and module, fixed arguments)
        [sys.executable, "-m", "storefront", "--host", HOST, "--port", str(storefront_port)],
        cwd=STOREFRONT_DIR,
        env=env,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def announce_when_ready(
    port: int, storefront_port: int, say: Callable[[str], None], timeout: float = 300
) -> threading.Thread:
    """Print where to go once both servers answer (the embedded PostgreSQL takes a moment)."""

    def ready(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (our own http URL)
                return bool(response.status == 200)
        except OSError:
            return False

    def wait() -> None:
        deadline = time.monotonic() + timeout
        anonid, shop = f"http://{PUBLIC_HOST}:{port}", f"http://{PUBLIC_HOST}:{storefront_port}"
        while time.monotonic() < deadline:
            if ready(f"http://{HOST}:{port}/readyz") and ready(
                f"http://{HOST}:{storefront_port}/healthz"
            ):
                say(
                    "\n"
                    f"  storefront   {shop}\n"
                    f"  inbox        {anonid}/dev/mail   (sign-up links land here)\n"
                    f"  anonid API   {anonid}/docs\n"
                    "\n  Press Ctrl-C to stop both.\n"
                )
                return
            time.sleep(0.3)

    thread = threading.Thread(target=wait, name="anonid-demo-banner", daemon=True)
    thread.start()
    return thread
