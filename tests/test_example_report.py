"""The committed example report (reports/example/) is what robustmm renders from its committed records today:
re-rendering a copy gives report.md and summary.json byte for byte (timings are stored in meta.json, so they match
too). A renderer change therefore comes with a regenerated example (``robustmm report reports/example``)."""

from __future__ import annotations

import shutil
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "reports" / "example"


def test_the_example_report_is_regenerated_byte_for_byte(tmp_path):
    from robustmm.experiment import rerender

    copy = tmp_path / "example"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("adversarial", "figures", ".lock"))
    report = rerender(copy)
    assert report.read_bytes() == (EXAMPLE / "report.md").read_bytes()
    assert (copy / "summary.json").read_bytes() == (EXAMPLE / "summary.json").read_bytes()
    assert {p.name for p in (copy / "figures").iterdir()} == {p.name for p in (EXAMPLE / "figures").iterdir()}
