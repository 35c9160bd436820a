"""Several runs -> one prompt-vs-finetune verdict over training seeds (``robustmm pool``).

A verdict read off one pair can belong to one training run rather than to the tuning method
(docs/studies.md, "Tuning seed and robustness"). Given runs made on the same examples and attacks whose
members were tuned with different seeds, ``pool`` treats every listed prompt-tuned and finetuned member
as one draw of its method, and asks the paired question of :mod:`robustmm.comparison` with the members as
units: per (dataset, attack setting) held by every member, each member's attack success rate on the
examples *every* member answers correctly clean, the difference of the two methods' mean rates, and a
95% CI and p-value from a two-level bootstrap (members resampled within each method, examples resampled
alike for every member), Holm-adjusted within each dataset. It needs at least 2 members per method and
warns under 3 (with 2 the bootstrap over members has little to resample).

Every number comes from the runs' ``records.jsonl``; the markdown and its JSON twin are written
atomically.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from robustmm.compare import shared_examples
from robustmm.comparison import Comparison, adjust_holm, by_setting, compare_groups
from robustmm.errors import RobustMMError
from robustmm.report import accuracy_table, dataset_verdict, headline_table, how_to_read, md_escape, percent, \
    setting_verdict, write_markdown_and_json
from robustmm.statistics import mean
from robustmm.summary import MEMBERS
from robustmm.types import AttackRecord

log = logging.getLogger(__name__)
MIN_MEMBERS, WARN_MEMBERS = 2, 3


@dataclass(frozen=True)
class Member:
    """One tuned model's records: ``label`` e.g. "P1", ``source`` e.g. "default/prompt"."""

    label: str
    source: str
    member: str  # "prompt" or "finetune"
    records: list[AttackRecord]


def members_of(runs: list[tuple[str, list[AttackRecord]]], prompt_from: list[tuple[str, list[AttackRecord]]] = (),
               finetune_from: list[tuple[str, list[AttackRecord]]] = ()) -> list[Member]:
    """Both members of each (name, records) in ``runs``, plus the prompt-tuned member of each in
    ``prompt_from`` and the finetuned member of each in ``finetune_from``; labelled P1.. and F1..

    Raises ``RobustMMError`` when a run lacks a member it should give, or when a method has no member.
    """
    wanted = [(name, records, member) for name, records in runs for member in MEMBERS]
    wanted += [(name, records, "prompt") for name, records in prompt_from]
    wanted += [(name, records, "finetune") for name, records in finetune_from]
    wanted.sort(key=lambda w: MEMBERS.index(w[2]))  # prompt-tuned members first, each kind in the order given
    out, counts = [], {m: 0 for m in MEMBERS}
    for name, records, member in wanted:
        own = [r for r in records if r.member == member]
        if not own:
            raise RobustMMError(f"Run {name} has no records of its {member} member.")
        counts[member] += 1
        out.append(Member(f"{'P' if member == 'prompt' else 'F'}{counts[member]}", f"{name}/{member}", member, own))
    for member in MEMBERS:
        if counts[member] == 0:
            raise RobustMMError(f"No {member} member to pool; give runs that hold one (--{member}-from RUN adds one).")
    return out


def _refuse_duplicates(members: list[Member]) -> None:
    """One model listed twice (e.g. the finetuned member every prompt-seed run shares) would count twice:
    refuse two members with identical records on a dataset."""
    seen: dict[tuple, str] = {}
    for m in members:
        per_dataset: dict[str, list] = defaultdict(list)
        for r in m.records:
            per_dataset[r.dataset].append((r.attack_key, r.example_id, r.clean_prediction, r.adv_prediction, r.adv_text))
        for dataset, rows in per_dataset.items():
            fingerprint = (m.member, dataset, tuple(sorted(rows)))
            if fingerprint in seen:
                raise RobustMMError(f"Members {seen[fingerprint]} and {m.source} have identical records on {dataset} "
                                    "(the same model listed twice?); list each tuned model once.")
            seen[fingerprint] = m.source


def pool_members(members: list[Member], seed: int = 0) -> tuple[list[Comparison], list[tuple[str, str]]]:
    """Pool ``members`` per setting held by all of them (side a = prompt-tuned, b = finetuned).

    Returns the Holm-adjusted comparisons and the (dataset, attack_key) settings left out because some
    member lacks them. Raises ``RobustMMError`` with fewer than 2 members of a method, when no setting is
    shared, when an example id carries different inputs in two members (different data), or when two
    members of a method have identical records on a dataset (one model listed twice).
    """
    for member in MEMBERS:
        count = sum(m.member == member for m in members)
        if count < MIN_MEMBERS:
            raise RobustMMError(f"Pooling needs at least {MIN_MEMBERS} {member} members (training runs) to treat runs as "
                                f"units, got {count}; for one pair use robustmm report, for two runs robustmm compare.")
        if count < WARN_MEMBERS:
            log.warning("only %d %s members: the bootstrap over training runs has little to resample; read the CIs as rough",
                        count, member)
    _refuse_duplicates(members)
    groups = [by_setting(m.records, m.member) for m in members]
    prompts = [i for i, m in enumerate(members) if m.member == "prompt"]
    finetunes = [i for i, m in enumerate(members) if m.member == "finetune"]
    labels = (f"prompt-tuned ×{len(prompts)}", f"finetuned ×{len(finetunes)}")
    rows, left_out = [], []
    for key in sorted(set().union(*groups)):
        if not all(key in g for g in groups):
            left_out.append((key[1], key[2]))
            continue
        ids = shared_examples([g[key] for g in groups], [m.source for m in members], key[1])
        if not ids:
            left_out.append((key[1], key[2]))
            continue
        rows_of = [[g[key][i] for i in ids] for g in groups]
        rows.append(compare_groups([rows_of[i] for i in prompts], [rows_of[i] for i in finetunes], labels, seed))
    if not rows:
        raise RobustMMError("The runs share no attack setting held by every member; pool runs made with the same datasets, "
                            "attacks and seed.")
    return adjust_holm(rows), left_out


def clean_accuracy(member: Member, dataset: str) -> tuple[float, int]:
    """A member's clean accuracy in [0, 1] over the distinct examples it was attacked on in ``dataset``, and their number."""
    scores = {}
    for r in member.records:
        if r.dataset == dataset:
            scores.setdefault(r.example_id, r.clean_score)
    from robustmm.metrics import is_correct

    return mean([float(is_correct(v)) for v in scores.values()]), len(scores)


def rates_text(values: tuple[float, ...]) -> str:
    """Per-member attack success rates in whole percent, '24 / 10 / 23'."""
    return " / ".join(f"{100 * v:.0f}" for v in values)


def render_pool(rows: list[Comparison], left_out: list[tuple[str, str]], members: list[Member], out: str | Path,
                command: str = "") -> Path:
    """Write the pooled verdict as markdown to ``out`` (and ``out`` with suffix .json); return ``out``."""
    prompts = [m for m in members if m.member == "prompt"]
    finetunes = [m for m in members if m.member == "finetune"]
    names = (f"prompt tuning ({len(prompts)} members)", f"finetuning ({len(finetunes)} members)")
    labels = ("prompt-tuned", "finetuned")
    datasets = sorted({(c.task, c.dataset) for c in rows})
    lines = [f"# robustmm pooled verdict: {len(prompts)} prompt-tuned vs {len(finetunes)} finetuned members", "",
             "Each member is one tuned model (e.g. one training seed), attacked on the same examples with the same attacks. "
             "Unit of the statistics: the training run (members are resampled within each method).", "",
             "## Members", "", "| member | from | " + " | ".join(f"clean accuracy on {md_escape(d)}" for _, d in datasets) + " |",
             "|---|---|" + "---|" * len(datasets)]
    for m in members:
        cells = []
        for _, d in datasets:
            accuracy, n = clean_accuracy(m, d)
            cells.append(f"{percent(accuracy)}% ({n})" if n else "–")
        lines.append(f"| {m.label} | `{md_escape(m.source)}` | " + " | ".join(cells) + " |")
    lines += ["", "## Verdicts", ""]
    for task, dataset in datasets:
        shown = [c for c in rows if (c.task, c.dataset) == (task, dataset)]
        lines.append(f"- **{md_escape(dataset)}** ({task}): {md_escape(dataset_verdict(shown, names))}")
    lines += ["", "How to read: " + how_to_read(labels, pooled=True)[0], ""]
    for task, dataset in datasets:
        shown = [c for c in rows if (c.task, c.dataset) == (task, dataset)]
        lines += [f"## {md_escape(dataset)} ({task})", "", f"{shown[0].n} examples shared by every member per attack setting; "
                  f"ASR per member ({' / '.join(m.label for m in prompts)} and {' / '.join(m.label for m in finetunes)}) in the last column.", ""]
        table = headline_table(shown, labels)
        table[0] += " member ASRs (%) P / F |"
        table[1] += "---|"
        table[2:] = [line + f" {rates_text(c.a.members)} ‖ {rates_text(c.b.members)} |" for line, c in zip(table[2:], shown)]
        lines += table + [""]
        lines += [f"- {md_escape(setting_verdict(c, names))}" for c in shown] + [""]
        lines += accuracy_table(shown, labels, scores=task == "vqa") + [""]
    if left_out:
        counts: dict[str, int] = defaultdict(int)
        for dataset, _ in left_out:
            counts[dataset] += 1
        lines += ["Not pooled, because some member lacks them (the keys are in the JSON twin of this file):", ""]
        lines += [f"- {md_escape(d)}: {n} attack setting{'s' if n != 1 else ''}" for d, n in sorted(counts.items())]
        lines.append("")
    lines += ["## Reproduce", "", "```", command, "```", "", "Every number above is computed from the runs' `records.jsonl`.", ""]
    data = {"command": command, "unit": "training run (member)", "members": [{"label": m.label, "from": m.source, "member": m.member} for m in members],
            "not_pooled": [{"dataset": d, "attack_key": k} for d, k in left_out],
            "settings": [asdict(c) | {"outcome": c.outcome, "verdict": setting_verdict(c, names)} for c in rows]}
    return write_markdown_and_json(out, "\n".join(lines), data, "pooled verdict")
