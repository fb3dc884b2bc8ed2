"""``@anonid/client`` (clients/js): its Vitest suite passes against a real ``anonid serve``, it
type-checks, and the committed builds (``clients/js/dist``, which ``npm install ./clients/js``
uses, and the storefront's copy) are exactly what its build makes from the source.

The toolchain (TypeScript, tsup, Vitest, altcha-lib for the tests) is pinned in
``clients/js/package-lock.json`` and installed here with ``npm ci`` on first use.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client_support import CLIENT_JS
from tests.npm_support import ensure_npm_ci
from tests.processes import ANONID
from tests.storefront_support import STOREFRONT_DIR

STOREFRONT_COPY = STOREFRONT_DIR / "storefront" / "static" / "anonid-client.js"
QUIET = {"NO_COLOR": "1", "FORCE_COLOR": "0", "CI": "1"}


def tool(name: str) -> str:
    return str(CLIENT_JS / "node_modules" / ".bin" / name)


def run(args: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=CLIENT_JS,
        env={**os.environ, **QUIET, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def toolchain() -> Iterator[None]:
    ensure_npm_ci(CLIENT_JS)
    yield


@pytest.fixture(scope="module")
def fresh_build(toolchain: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package built from its source now, into a folder of the test's own."""
    out = tmp_path_factory.mktemp("anonid-client-build")
    built = run([tool("tsup"), "--out-dir", str(out)], timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def test_the_committed_builds_are_what_the_source_builds_to(fresh_build: Path) -> None:
    for name in ("index.js", "index.d.ts"):
        committed = CLIENT_JS / "dist" / name
        assert committed.read_bytes() == (fresh_build / name).read_bytes(), (
            f"clients/js/dist/{name} is stale: run `npm run build` in clients/js and commit it"
        )
    assert STOREFRONT_COPY.read_bytes() == (fresh_build / "index.js").read_bytes(), (
        "the storefront's anonid-client.js is stale: copy clients/js/dist/index.js over it"
    )


def test_the_package_and_its_tests_type_check(toolchain: None) -> None:
    checked = run([tool("tsc"), "--noEmit"], timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_vitest_suite_passes_against_a_real_anonid(toolchain: None, private_url: str) -> None:
    """The suite's own setup (test/anonid.setup.ts) starts ``anonid serve`` on a free port against
    this module's fresh database; the suite fails here if any of its tests fails."""
    ran = run(
        [tool("vitest"), "run"], timeout=900, ANONID_BIN=ANONID, ANONID_DATABASE_URL=private_url
    )
    report = ran.stdout + ran.stderr
    assert ran.returncode == 0, report
    assert " failed" not in report.split("Test Files", 1)[-1]
    assert "Tests" in report and "passed" in report
