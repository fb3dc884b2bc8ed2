"""npm packages the tests drive (axe-core; the JS client's toolchain in ``clients/js``), installed
on first use with ``npm ci`` from the committed ``package-lock.json``, as ``tests.browser``
installs Debian's chromium.

The lock pins every version; a ``node_modules`` whose versions differ from it (the lock was
changed) is installed again. To move to a newer axe-core: change its version in
``tests/npm/package.json``, run ``npm install --package-lock-only`` in ``tests/npm`` and commit
both files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

NPM_DIR = Path(__file__).resolve().parent / "npm"


def _installed_as_locked(directory: Path) -> bool:
    lock = json.loads((directory / "package-lock.json").read_text())
    for path, entry in lock["packages"].items():
        if not path or entry.get("optional") or entry.get("link"):
            continue
        manifest = directory / path / "package.json"
        if not manifest.exists() or json.loads(manifest.read_text())["version"] != entry["version"]:
            return False
    return True


def npm() -> str:
    found = shutil.which("npm")
    if found is None:
        raise RuntimeError("these tests need npm (Node.js)")
    return found


def ensure_npm_ci(directory: Path) -> Path:
    """``directory/node_modules``, installed with ``npm ci`` exactly as ``package-lock.json``
    pins it (again when the lock changed). Install scripts are not run: none is needed."""
    if not _installed_as_locked(directory):
        subprocess.run(
            [npm(), "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=directory,
            check=True,
            capture_output=True,
            timeout=600,
        )
    return directory / "node_modules"


def ensure_npm_packages() -> Path:
    """``tests/npm/node_modules``, installed exactly as locked."""
    return ensure_npm_ci(NPM_DIR)


def axe_source() -> str:
    """The source of axe-core, to inject into a page."""
    return (ensure_npm_packages() / "axe-core" / "axe.min.js").read_text("utf-8")
