"""bench/RESULTS.md holds two runs' output: bench/run.py's report and bench/scale.py's section.

Each writer replaces only what it owns, so a rerun of one never loses the other's figures.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAIN = """# anonid benchmark results

## Targets

| target | measured | verdict |

## Analysis (from `bench/NOTES.md`, written by hand)

### Running it
"""


def test_scale_section_is_inserted_before_the_analysis_and_replaced_alone_on_rerun() -> None:
    report = _report()
    first = report.replace_section(
        MAIN, report.SCALE_HEADING, "## Scale: 20 accounts\n\n### Targets\n\nold figure\n"
    )
    assert first.index("## Scale: 20 accounts") < first.index("## Analysis")
    assert "old figure" in first

    again = report.replace_section(
        first, report.SCALE_HEADING, "## Scale: 40 accounts\n\n### Targets\n\nnew figure\n"
    )
    assert "old figure" not in again and "## Scale: 20" not in again
    assert "new figure" in again
    # Everything outside the section is byte for byte what it was.
    assert again.replace("## Scale: 40 accounts\n\n### Targets\n\nnew figure\n\n", "") == MAIN


def test_a_new_main_report_carries_the_scale_section_of_the_file_it_replaces(
    tmp_path: Path,
) -> None:
    report = _report()
    results = tmp_path / "RESULTS.md"
    results.write_text(
        report.replace_section(MAIN, report.SCALE_HEADING, "## Scale: 20 accounts\n\nkept\n")
    )
    fresh_main = MAIN.replace("| target | measured | verdict |", "| fresh main run |")

    written = report.carry_section(results, fresh_main, report.SCALE_HEADING)

    assert "| fresh main run |" in written
    assert "## Scale: 20 accounts\n\nkept\n" in written
    assert written.index("## Scale:") < written.index("## Analysis")


def test_a_main_report_without_an_earlier_scale_section_is_written_unchanged(
    tmp_path: Path,
) -> None:
    report = _report()
    results = tmp_path / "RESULTS.md"
    results.write_text(MAIN)
    assert report.carry_section(results, MAIN, report.SCALE_HEADING) == MAIN
    assert report.carry_section(tmp_path / "absent.md", MAIN, report.SCALE_HEADING) == MAIN
