"""Two runs -> one member of each compared on the same examples and attacks (``robustmm compare``).

Answers questions such as "is the member finetuned at lr 3e-4 less robust than the one finetuned at
1e-3?". For every (dataset, attack setting) both runs hold, the chosen member of run A and of run B
are paired by example (same id, same clean input and answers) and compared exactly as ``robustmm
attack`` compares a pair (:mod:`robustmm.comparison`: attack success on the examples both answer
correctly, exact McNemar, Holm within each dataset), rendered with the same tables and sentences.
Every number comes from the two ``records.jsonl`` files; the markdown and its JSON twin are written
atomically.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from robustmm.comparison import Comparison, adjust_holm, by_setting, compare
from robustmm.errors import RobustMMError
from robustmm.report import accuracy_table, dataset_verdict, headline_table, how_to_read, md_escape, setting_verdict, \
    write_markdown_and_json
from robustmm.types import AttackRecord


def shared_examples(groups: list[dict[str, AttackRecord]], labels: list[str], dataset: str) -> list[str]:
    """Example ids held by every group ({example_id: record} of one setting), sorted (so no statistic depends on
    the order records were written in). Raises ``RobustMMError`` if an id carries different inputs in two groups."""
    first, *others = groups
    ids = sorted(i for i in first if all(i in g for g in others))
    for i in ids:
        for g, label in zip(others, labels[1:]):
            if (g[i].text, g[i].answers) != (first[i].text, first[i].answers):
                raise RobustMMError(f"Example {i} of {dataset} has different inputs in {labels[0]} and {label}; "
                                    "they were made from different data and cannot be paired.")
    return ids


def compare_runs(records_a: list[AttackRecord], records_b: list[AttackRecord], member_a: str = "finetune",
                 member_b: str | None = None, labels: tuple[str, str] = ("A", "B"), seed: int = 0
                 ) -> tuple[list[Comparison], list[tuple[str, str, str]]]:
    """Pair ``member_a`` of run A with ``member_b`` (default: the same member) of run B.

    Returns the Holm-adjusted comparisons (side a = run A's member; one per shared setting) and the
    settings not compared, as (dataset, attack_key, "only in A" / "only in B" / "no shared examples").
    Raises ``RobustMMError`` if the runs share no setting, or if an example id carries different inputs
    in the two runs (they were made from different data).
    """
    member_b = member_b or member_a
    groups_a, groups_b = by_setting(records_a, member_a), by_setting(records_b, member_b)
    for member, groups, label in ((member_a, groups_a, labels[0]), (member_b, groups_b, labels[1])):
        if not groups:
            raise RobustMMError(f"Run {label} has no records of member '{member}' (members are 'prompt' and 'finetune').")
    rows, only = [], []
    for key in sorted(set(groups_a) | set(groups_b)):
        if key not in groups_a or key not in groups_b:
            only.append((key[1], key[2], f"only in {'A' if key in groups_a else 'B'}"))
            continue
        a, b = groups_a[key], groups_b[key]
        shared = shared_examples([a, b], [f"run {labels[0]}", f"run {labels[1]}"], key[1])
        if not shared:
            only.append((key[1], key[2], "no shared examples"))
            continue
        rows.append(compare([a[i] for i in shared], [b[i] for i in shared], labels, seed))
    if not rows:
        raise RobustMMError(f"Runs {labels[0]} and {labels[1]} share no attack setting with examples of both members; "
                            "compare runs made with the same datasets, attacks and seed.")
    return adjust_holm(rows), only


def render_comparison(rows: list[Comparison], only: list[tuple[str, str, str]], labels: tuple[str, str], out: str | Path,
                      command: str = "") -> Path:
    """Write the comparison as markdown to ``out`` (and ``out`` with suffix .json); return ``out``."""
    a, b = (md_escape(x) for x in labels)
    names = (f"A ({labels[0]})", f"B ({labels[1]})")
    lines = [f"# robustmm comparison: {a} vs {b}", "",
             f"The same attacks on the same examples: **A** = {a} (model `{md_escape(rows[0].a.model)}`), "
             f"**B** = {b} (model `{md_escape(rows[0].b.model)}`).", "", "## Verdicts", ""]
    datasets = sorted({(c.task, c.dataset) for c in rows})
    for task, dataset in datasets:
        lines.append(f"- **{md_escape(dataset)}** ({task}): "
                     f"{md_escape(dataset_verdict([c for c in rows if (c.task, c.dataset) == (task, dataset)], names))}")
    lines += ["", "How to read: " + how_to_read(("A", "B"))[0], ""]
    for task, dataset in datasets:
        shown = [c for c in rows if (c.task, c.dataset) == (task, dataset)]
        lines += [f"## {md_escape(dataset)} ({task})", "", f"{shown[0].n} shared examples per attack setting.", ""]
        lines += headline_table(shown, ("A", "B")) + [""]
        lines += [f"- {md_escape(setting_verdict(c, names))}" for c in shown] + [""]
        lines += accuracy_table(shown, ("A", "B"), scores=task == "vqa") + [""]
    if only:
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for dataset, _, reason in only:
            counts[(dataset, reason)] += 1
        lines += ["Not compared (the keys are in the JSON twin of this file):", ""]
        lines += [f"- {md_escape(d)}: {n} attack setting{'s' if n != 1 else ''} {reason}" for (d, reason), n in sorted(counts.items())]
        lines.append("")
    lines += ["## Reproduce", "", "```", command, "```", "",
              "Every number above is computed from the two runs' `records.jsonl`.", ""]
    data = {"labels": list(labels), "command": command,
            "not_compared": [{"dataset": d, "attack_key": k, "reason": r} for d, k, r in only],
            "comparisons": [asdict(c) | {"outcome": c.outcome, "verdict": setting_verdict(c, names)} for c in rows]}
    return write_markdown_and_json(out, "\n".join(lines), data, "comparison")
