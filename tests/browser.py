"""Debian's Chromium for the browser tests (and other Debian tools tests drive, such as wrk):
installed on first use when missing (never Playwright's own browser download, which this
project's machines cannot fetch)."""

from __future__ import annotations

import os
import shutil
import subprocess

CHROMIUM = "/usr/bin/chromium"


def ensure_chromium() -> str:
    """The path of Debian's chromium, installing the package with apt-get if needed."""
    return ensure_debian_package(CHROMIUM, "chromium")


def ensure_debian_package(path: str, package: str) -> str:
    """``path``, installing Debian's ``package`` with apt-get first if it is missing."""
    if os.path.exists(path):
        return path
    apt = shutil.which("apt-get")
    if apt is None:
        raise RuntimeError(f"these tests need Debian's {package} at {path}")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, apt, "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(
        [*sudo, apt, "install", "-y", "-qq", package], check=True, env=env, capture_output=True
    )
    if not os.path.exists(path):
        raise RuntimeError(f"apt-get installed {package} but {path} is missing")
    return path
