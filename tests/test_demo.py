"""``anonid demo``: anonid and the storefront wired to each other, stopped together on Ctrl-C."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.processes import ANONID, clean_env, free_port


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_for_banner(proc: subprocess.Popen[str], log: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text()
        if "Press Ctrl-C to stop both" in text:
            return text
        if proc.poll() is not None:
            raise AssertionError(f"anonid demo exited early:\n{text}")
        time.sleep(0.3)
    raise AssertionError(f"anonid demo printed no URLs in time:\n{log.read_text()}")


def test_demo_serves_anonid_and_the_storefront_together_and_stops_both_on_ctrl_c(
    tmp_path: Path,
) -> None:
    port = free_port(18460, 18480)
    shop_port = free_port(port + 1, 18499)
    # Reached as localhost: browsers refuse an IP address as a passkey's RP id.
    anonid, shop = f"http://localhost:{port}", f"http://localhost:{shop_port}"
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [ANONID, "demo", "--port", str(port), "--storefront-port", str(shop_port)],
            cwd=tmp_path,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        banner = _wait_for_banner(proc, log)
        assert shop in banner
        assert f"{anonid}/dev/mail" in banner

        # The printed inbox is live: the demo runs the local mail catcher.
        assert httpx.get(f"{anonid}/dev/mail").status_code == 200
        # Passkeys are offered, for the RP id localhost and the storefront's origin too.
        assert 'data-passkey="get"' in httpx.get(f"{anonid}/account/login").text
        options = httpx.post(anonid + "/v1/login/passkey/options", headers={"Origin": shop})
        assert options.status_code == 200 and options.json()["rpId"] == "localhost"
        page = httpx.get(shop + "/")
        assert f'data-anonid="{anonid}"' in page.text

        # CORS with credentials is open to the storefront's origin, and only to it.
        preflight = httpx.options(
            anonid + "/v1/me/data",
            headers={
                "Origin": shop,
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert preflight.headers["access-control-allow-origin"] == shop
        assert preflight.headers["access-control-allow-credentials"] == "true"
        foreign = httpx.options(
            anonid + "/v1/me/data",
            headers={"Origin": "http://evil.test", "Access-Control-Request-Method": "PATCH"},
        )
        assert "access-control-allow-origin" not in foreign.headers

        # Plain http: the cookie must not be Secure, or the browser would drop it.
        created = httpx.post(anonid + "/v1/anonymous", headers={"Origin": shop})
        assert created.status_code == 201
        cookie = created.headers["set-cookie"]
        assert "HttpOnly" in cookie and "Secure" not in cookie
        token = created.cookies["anonid_session"]
        seen = httpx.get(shop + "/api/session", cookies={"anonid_session": token}).json()
        assert seen["visitor"] == {"user_id": created.json()["user"]["id"], "anonymous": True}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code in (0, 130), log.read_text()
    assert not _port_open(port), "anonid outlived the demo"
    assert not _port_open(shop_port), "the storefront outlived the demo"


def test_demo_refuses_a_busy_port_with_one_line(tmp_path: Path) -> None:
    port = free_port(18480, 18490)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        result = subprocess.run(
            [
                ANONID,
                "demo",
                "--port",
                str(free_port(18490, 18499)),
                "--storefront-port",
                str(port),
            ],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"anonid: port {port} is in use; choose another with --storefront-port"
    )
    assert "Traceback" not in result.stderr
