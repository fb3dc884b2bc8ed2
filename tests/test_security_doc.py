"""SECURITY.md cites tests by ``file::name``; every citation must name a test that exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITATION = re.compile(r"(test_[a-z0-9_]+\.py)::(test_[a-z0-9_]+)")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_every_test_cited_in_security_md_exists() -> None:
    cited = CITATION.findall((ROOT / "SECURITY.md").read_text())
    assert len(cited) > 40
    missing = [
        f"{file}::{name}"
        for file, name in cited
        if not (ROOT / "tests" / file).exists() or name not in _tests_in(ROOT / "tests" / file)
    ]
    assert missing == []
