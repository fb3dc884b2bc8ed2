"""The two client libraries install as the README says: ``pip install ./clients/python`` gives the
typed ``anonid_client`` with only PyJWT (with cryptography), httpx and standardwebhooks beneath it,
and ``npm install ./clients/js`` gives an ES module with type declarations and no runtime
dependencies."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from tests.client_support import CLIENT_JS, CLIENT_PYTHON
from tests.npm_support import npm


def test_the_python_wheel_is_typed_and_depends_only_on_pyjwt_httpx_and_standardwebhooks(
    tmp_path: Path,
) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), "."],
        cwd=CLIENT_PYTHON,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = tmp_path.glob("anonid_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [metadata_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    assert "anonid_client/py.typed" in names
    for module in ("verifier", "keys", "renewal", "asgi", "fastapi", "webhooks", "errors"):
        assert f"anonid_client/{module}.py" in names
    assert metadata["Name"] == "anonid-client"
    required = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert sorted(r.split(">")[0].split("[")[0].strip().lower() for r in required) == [
        "httpx",
        "pyjwt",
        "standardwebhooks",
    ]
    assert any(r.lower().startswith("pyjwt[crypto]") for r in required)
    # Nothing of the server's comes along.
    assert not any(n.startswith("app/") for n in names)


def test_the_python_client_imports_nothing_of_the_server() -> None:
    source = "\n".join(
        p.read_text() for p in (CLIENT_PYTHON / "src" / "anonid_client").glob("*.py")
    )
    assert "from app" not in source and "import app" not in source


def test_the_npm_package_is_an_es_module_with_types_and_no_runtime_dependencies() -> None:
    manifest = json.loads((CLIENT_JS / "package.json").read_text())
    assert manifest["name"] == "@anonid/client"
    assert manifest["type"] == "module"
    assert manifest["exports"]["."]["types"] == "./dist/index.d.ts"
    assert manifest["exports"]["."]["import"] == "./dist/index.js"
    assert "dependencies" not in manifest
    # No install-time scripts: `npm install ./clients/js` in a fresh project just links it.
    assert not {"prepare", "install", "postinstall", "preinstall"} & set(manifest["scripts"])
    assert manifest["engines"]["node"] == ">=20"
    packed = subprocess.run(
        [npm(), "pack", "--dry-run", "--json", "--ignore-scripts"],
        cwd=CLIENT_JS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert packed.returncode == 0, packed.stderr
    files = {f["path"] for f in json.loads(packed.stdout)[0]["files"]}
    assert {"dist/index.js", "dist/index.d.ts", "package.json", "README.md"} <= files
    assert not any(f.startswith(("src/", "test/", "node_modules/")) for f in files)
