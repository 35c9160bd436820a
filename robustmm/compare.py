"""Two runs -> one member of each compared on the same examples and attacks (``robustmm compare``).

Answers questions such as "is the member finetuned at lr 3e-4 less robust than the one
finetuned at 1e-3?". For every (dataset, attack configuration) that both runs hold, the chosen
member of run A and of run B are paired by example: same example id, same clean input and
answers. Per setting: both members' clean and robust accuracy, the paired drop difference
(B minus A) with its 95% bootstrap CI, and McNemar's exact test on robust correctness.
Every number comes from the two ``records.jsonl`` files. The markdown (and a JSON twin) is
written to temporary files and renamed into place, so a failure leaves no half-written file.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from robustmm.errors import RobustMMError
from robustmm.report import format_eps, md_escape, percent, points_with_ci, write_markdown_and_json
from robustmm.summary import MemberStats, PairedSetting, paired_stats
from robustmm.types import AttackRecord


@dataclass(frozen=True)
class RunComparison(PairedSetting):
    """Member A (of run A) vs member B (of run B) under one attack configuration on one dataset."""

    a: MemberStats
    b: MemberStats
    drop_difference: float  # B's drop - A's drop in [-1, 1] (> 0: B degraded more)
    drop_difference_ci: tuple[float, float]
    mcnemar: dict  # robust correctness: a_only = only A right, b_only = only B right


def by_setting(records: list[AttackRecord], member: str) -> dict[tuple, dict[str, AttackRecord]]:
    """``member``'s records as {(task, dataset, attack_key): {example_id: record}}."""
    out: dict[tuple, dict[str, AttackRecord]] = defaultdict(dict)
    for r in records:
        if r.member == member:
            out[(r.task, r.dataset, r.attack_key)][r.example_id] = r
    return out


def shared_examples(groups: list[dict[str, AttackRecord]], labels: list[str], dataset: str) -> list[str]:
    """Example ids held by every group ({example_id: record} of one setting), in the first group's record
    order (as ``summarize`` keeps it). Raises ``RobustMMError`` if an id carries different inputs in two groups."""
    first, *others = groups
    ids = [i for i in first if all(i in g for g in others)]
    for i in ids:
        for g, label in zip(others, labels[1:]):
            if (g[i].text, g[i].answers) != (first[i].text, first[i].answers):
                raise RobustMMError(f"Example {i} of {dataset} has different inputs in {labels[0]} and {label}; "
                                    "they were made from different data and cannot be paired.")
    return ids


def compare_runs(records_a: list[AttackRecord], records_b: list[AttackRecord], member_a: str = "finetune",
                 member_b: str | None = None, labels: tuple[str, str] = ("A", "B"), seed: int = 0
                 ) -> tuple[list[RunComparison], list[tuple[str, str, str]]]:
    """Pair ``member_a`` of run A with ``member_b`` (default: the same member) of run B.

    Returns the comparisons (one per shared setting, ordered by dataset, attack and ε) and the
    settings not compared, as (dataset, attack_key, "only in A" / "only in B" / "no shared examples"). Raises
    ``RobustMMError`` if the runs share no setting, or if an example id carries different
    inputs in the two runs (they were made from different data).
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
        rows_a, rows_b = [a[i] for i in shared], [b[i] for i in shared]
        stats_a, stats_b, difference, ci, test = paired_stats((labels[0], rows_a), (labels[1], rows_b), seed)
        first = rows_a[0]
        rows.append(RunComparison(task=key[0], dataset=key[1], attack=first.attack, attack_key=key[2],
                                  modality=first.modality, eps=first.eps, a=stats_a, b=stats_b,
                                  drop_difference=difference, drop_difference_ci=ci, mcnemar=test))
    if not rows:
        raise RobustMMError(f"Runs {labels[0]} and {labels[1]} share no attack setting with examples of both members; "
                            "compare runs made with the same datasets, attacks and seed.")
    rows.sort(key=lambda c: c.sort_key)
    return rows, only


def dataset_verdict(rows: list[RunComparison], labels: tuple[str, str]) -> str:
    """One sentence per dataset: in how many settings B degraded more than A, and how many significantly."""
    more = [c for c in rows if c.drop_difference > 0]
    less = [c for c in rows if c.drop_difference < 0]
    return (f"{labels[1]} dropped more than {labels[0]} under {len(more)} and less under {len(less)} of {len(rows)} "
            f"attack settings; significantly more (paired bootstrap 95% CI above 0) under "
            f"{sum(c.significant for c in more)} and significantly less under {sum(c.significant for c in less)}.")


def render_comparison(rows: list[RunComparison], only: list[tuple[str, str, str]], labels: tuple[str, str], out: str | Path,
                      command: str = "") -> Path:
    """Write the comparison as markdown to ``out`` (and ``out`` with suffix .json); return ``out``."""
    out = Path(out)
    a, b = (md_escape(x) for x in labels)
    lines = [f"# robustmm comparison: {a} vs {b}", "",
             f"The same attacks on the same examples: **A** = {a} (model `{md_escape(rows[0].a.model)}`), "
             f"**B** = {b} (model `{md_escape(rows[0].b.model)}`). Accuracies in %; "
             "\"drop\" is clean minus robust accuracy; the drop difference is B's drop minus A's "
             "(> 0: B degraded more) with a paired 95% bootstrap CI over examples; McNemar's exact test compares "
             "robust correctness.", "", "## Verdicts", ""]
    datasets = sorted({(c.task, c.dataset) for c in rows})
    for task, dataset in datasets:
        lines.append(f"- **{md_escape(dataset)}** ({task}): "
                     f"{dataset_verdict([c for c in rows if c.dataset == dataset and c.task == task], labels)}")
    lines.append("")
    for task, dataset in datasets:
        shown = [c for c in rows if c.dataset == dataset and c.task == task]
        lines += [f"## {md_escape(dataset)} ({task})", "", f"{shown[0].a.n} shared examples per attack.", "",
                  "| attack | ε | A clean → robust | A drop | B clean → robust | B drop | drop difference B − A (pts) [95% CI] | significant | McNemar: only A right / only B right | McNemar p |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for c in shown:
            lines.append(f"| {md_escape(c.attack)} | {format_eps(c)} | {percent(c.a.clean_accuracy)} → {percent(c.a.robust_accuracy)} | "
                         f"{percent(c.a.absolute_drop)} | {percent(c.b.clean_accuracy)} → {percent(c.b.robust_accuracy)} | "
                         f"{percent(c.b.absolute_drop)} | {points_with_ci(c.drop_difference, c.drop_difference_ci)} | "
                         f"{'yes' if c.significant else 'no'} | "
                         f"{c.mcnemar['a_only']} / {c.mcnemar['b_only']} | {c.mcnemar['p_value']:.3g} |")
        lines.append("")
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
            "comparisons": [asdict(c) | {"significant": c.significant} for c in rows]}
    return write_markdown_and_json(out, "\n".join(lines), data, "comparison")
