"""Debian's Chromium for the browser tests: installed on first use when missing (never
Playwright's own browser download, which this project's machines cannot fetch)."""

from __future__ import annotations

import os
import shutil
import subprocess

CHROMIUM = "/usr/bin/chromium"


def ensure_chromium() -> str:
    """The path of Debian's chromium, installing the package with apt-get if needed."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    apt = shutil.which("apt-get")
    if apt is None:
        raise RuntimeError("the browser tests need Debian's chromium at /usr/bin/chromium")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, apt, "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(
        [*sudo, apt, "install", "-y", "-qq", "chromium"], check=True, env=env, capture_output=True
    )
    if not os.path.exists(CHROMIUM):
        raise RuntimeError("apt-get installed chromium but /usr/bin/chromium is missing")
    return CHROMIUM
