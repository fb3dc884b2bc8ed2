"""npm packages the tests drive (axe-core), installed on first use with ``npm ci`` from the
committed ``tests/npm/package-lock.json``, as ``tests.browser`` installs Debian's chromium.

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
MODULES = NPM_DIR / "node_modules"


def _installed_as_locked() -> bool:
    lock = json.loads((NPM_DIR / "package-lock.json").read_text())
    for path, entry in lock["packages"].items():
        if not path:
            continue
        manifest = NPM_DIR / path / "package.json"
        if not manifest.exists() or json.loads(manifest.read_text())["version"] != entry["version"]:
            return False
    return True


def ensure_npm_packages() -> Path:
    """``tests/npm/node_modules``, installed exactly as locked."""
    if not _installed_as_locked():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("these tests need npm (Node.js) to install tests/npm")
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=NPM_DIR,
            check=True,
            capture_output=True,
            timeout=600,
        )
    return MODULES


def axe_source() -> str:
    """The source of axe-core, to inject into a page."""
    return (ensure_npm_packages() / "axe-core" / "axe.min.js").read_text("utf-8")
