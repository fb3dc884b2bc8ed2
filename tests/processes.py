"""Running the real ``anonid`` console script in a subprocess, with a clean environment."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

# The console script of the interpreter running the tests (the project's venv), never whatever
# `anonid` happens to come first on PATH: that may be another checkout's install.
_BESIDE = Path(sys.executable).with_name("anonid")
ANONID = str(_BESIDE) if _BESIDE.exists() else (shutil.which("anonid") or "anonid")


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus every ANONID_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANONID_")}
    env.update(extra)
    return env


def free_port(start: int, end: int) -> int:
    for port in range(start, end):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def run(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ANONID, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def terminate(proc: subprocess.Popen[bytes], grace: float = 30) -> int:
    """SIGTERM, then SIGKILL if it has not exited within ``grace`` seconds; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


class Served:
    """``anonid serve`` in the background; waits until /readyz answers 200."""

    def __init__(self, cwd: Path, env: dict[str, str], port: int, *extra: str) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log = cwd / f"serve-{port}.log"
        self._log = self.log.open("w")
        self.proc = subprocess.Popen(
            [ANONID, "serve", "--port", str(port), *extra],
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"anonid serve exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(self.base + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"anonid serve not ready in time:\n{self.log.read_text()}")

    def stop(self) -> int:
        code = terminate(self.proc)
        self._log.close()
        return code
