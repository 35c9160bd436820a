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


def test_the_readme_quotes_the_example_report():
    """Every row of the README's excerpt table and both verdict counts are in the committed report."""
    readme = (EXAMPLE.parents[1] / "README.md").read_text(encoding="utf-8")
    report = (EXAMPLE / "report.md").read_text(encoding="utf-8")
    excerpt = readme.split("## Example report", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in excerpt.splitlines() if line.startswith("| ") and "ASR" not in line]
    assert len(rows) == 4
    for row in rows:
        cells = [cell.strip().replace("−", "-") for cell in row.strip("|").split("|")]
        attack = cells[0].split()[0]
        quoted = f"| {cells[1]} | {cells[2]} | {cells[3]} |"
        lines = [line for line in report.splitlines() if line.startswith(f"| {attack} |") and quoted in line]
        assert lines, f"README row for {attack} is not in the report: {quoted}"
        assert f"| {cells[4]} | " in lines[0] and lines[0].rstrip().endswith(f"| {cells[5]} |")
    for sentence in ("more robust under 0 and the finetuned member under 0 of 6", "more robust under 1 and the finetuned member under 2 of 6"):
        assert sentence in excerpt.replace("\n> ", " ") and sentence in report
