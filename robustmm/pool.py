"""Several runs -> one prompt-vs-finetune verdict over training seeds (``robustmm pool``).

A verdict read off one pair can belong to one training run rather than to the tuning method
(README, "Tuning seed and robustness"). Given runs made on the same examples and attacks whose
members were tuned with different seeds, ``pool`` treats every listed prompt-tuned and finetuned
member as one draw of its method. Per (dataset, attack configuration) held by every member:

- each member's accuracy drop (clean minus robust) on the examples all members share;
- the pooled drop difference, mean finetuned drop minus mean prompt-tuned drop (> 0: prompt
  tuning degraded less), with a hierarchical bootstrap 95% CI that resamples members within
  each method and examples (the same for every member), so it widens with the seed spread;
- how many of the prompt x finetune member pairings are significant on their own (paired
  bootstrap over examples, as ``robustmm attack`` reports one pair).

Every number comes from the runs' ``records.jsonl``; the markdown and its JSON twin are
written atomically.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from robustmm import metrics
from robustmm.compare import by_setting, shared_examples
from robustmm.errors import RobustMMError
from robustmm.report import format_eps, md_escape, points_with_ci, write_markdown_and_json
from robustmm.summary import MEMBERS, PairedSetting
from robustmm.types import AttackRecord


@dataclass(frozen=True)
class Member:
    """One tuned model's records: ``label`` e.g. "P1", ``source`` e.g. "default/prompt"."""

    label: str
    source: str
    member: str  # "prompt" or "finetune"
    records: list[AttackRecord]


@dataclass(frozen=True)
class PooledSetting(PairedSetting):
    """All members under one attack configuration on one dataset (drops in [-1, 1], per member in list order)."""

    n: int  # examples shared by every member
    prompt_drops: tuple[float, ...]
    finetune_drops: tuple[float, ...]
    drop_difference: float  # mean finetuned drop - mean prompt-tuned drop (> 0: prompt tuning degraded less)
    drop_difference_ci: tuple[float, float]  # hierarchical bootstrap over members and examples
    pairings_for_prompt: int  # member pairings whose own paired CI is above 0
    pairings_for_finetune: int  # ... below 0
    pairings: int


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


def pool_members(members: list[Member], seed: int = 0) -> tuple[list[PooledSetting], list[tuple[str, str]]]:
    """Pool ``members`` per setting held by all of them.

    Returns the pooled settings (ordered by dataset, attack and ε) and the (dataset, attack_key)
    settings left out because some member lacks them. Raises ``RobustMMError`` when no setting is
    shared, when an example id carries different inputs in two members (different data), or when
    two members of a method have identical records on a dataset (one model listed twice).
    """
    _refuse_duplicates(members)
    groups = [by_setting(m.records, m.member) for m in members]
    prompts = [i for i, m in enumerate(members) if m.member == "prompt"]
    finetunes = [i for i, m in enumerate(members) if m.member == "finetune"]
    rows, left_out = [], []
    for key in sorted(set().union(*groups)):
        if not all(key in g for g in groups):
            left_out.append((key[1], key[2]))
            continue
        ids = shared_examples([g[key] for g in groups], [m.source for m in members], key[1])
        if not ids:
            left_out.append((key[1], key[2]))
            continue
        drops = [[g[key][i].clean_score - g[key][i].adv_score for i in ids] for g in groups]
        p_drops, f_drops = [drops[i] for i in prompts], [drops[i] for i in finetunes]
        pair_cis = [metrics.paired_bootstrap_ci(f, p, seed=seed) for p in p_drops for f in f_drops]
        p_means, f_means = [metrics.mean(d) for d in p_drops], [metrics.mean(d) for d in f_drops]
        first = groups[0][key][ids[0]]
        rows.append(PooledSetting(
            task=key[0], dataset=key[1], attack=first.attack, attack_key=key[2], modality=first.modality, eps=first.eps,
            n=len(ids), prompt_drops=tuple(p_means), finetune_drops=tuple(f_means),
            drop_difference=metrics.mean(f_means) - metrics.mean(p_means),
            drop_difference_ci=metrics.hierarchical_bootstrap_ci(p_drops, f_drops, seed=seed),
            pairings_for_prompt=sum(low > 0 for low, _ in pair_cis), pairings_for_finetune=sum(high < 0 for _, high in pair_cis),
            pairings=len(pair_cis),
        ))
    if not rows:
        raise RobustMMError("The runs share no attack setting held by every member; pool runs made with the same datasets, "
                            "attacks and seed.")
    rows.sort(key=lambda c: c.sort_key)
    return rows, left_out


def clean_accuracy(member: Member, dataset: str) -> tuple[float, int]:
    """A member's clean accuracy in [0, 1] over the distinct examples it was attacked on in ``dataset``, and their number."""
    scores = {}
    for r in member.records:
        if r.dataset == dataset:
            scores.setdefault(r.example_id, r.clean_score)
    return metrics.mean(list(scores.values())), len(scores)


def dataset_verdict(rows: list[PooledSetting], n_prompt: int, n_finetune: int) -> str:
    """One sentence per dataset: which method degraded less over the pooled members, and how reliably."""
    more = [c for c in rows if c.drop_difference > 0]
    less = [c for c in rows if c.drop_difference < 0]
    every = sum(c.pairings_for_finetune == c.pairings for c in less) + sum(c.pairings_for_prompt == c.pairings for c in more)
    return (f"Pooled over {n_prompt} prompt-tuned and {n_finetune} finetuned members, prompt tuning degraded less under "
            f"{len(more)} and finetuning under {len(less)} of {len(rows)} attack settings; significantly (hierarchical "
            f"bootstrap 95% CI over members and examples excludes 0) for prompt tuning under {sum(c.significant for c in more)} "
            f"and for finetuning under {sum(c.significant for c in less)}; in {every} settings every member pairing "
            "was significant the same way on its own.")


def drops_text(values: tuple[float, ...]) -> str:
    """Per-member drops in whole points, '24 / 10 / 23'."""
    return " / ".join(f"{100 * v:.0f}" for v in values)


def render_pool(rows: list[PooledSetting], left_out: list[tuple[str, str]], members: list[Member], out: str | Path,
                command: str = "") -> Path:
    """Write the pooled verdict as markdown to ``out`` (and ``out`` with suffix .json); return ``out``."""
    prompts = [m for m in members if m.member == "prompt"]
    finetunes = [m for m in members if m.member == "finetune"]
    lines = [f"# robustmm pooled verdict: {len(prompts)} prompt-tuned vs {len(finetunes)} finetuned members", "",
             "Each member is one tuned model (e.g. one training seed), attacked on the same examples with the same "
             "attacks. Drops are clean minus robust accuracy in points; the pooled drop difference is the mean "
             "finetuned drop minus the mean prompt-tuned drop (> 0: prompt tuning degraded less), with a hierarchical "
             "bootstrap 95% CI (members resampled within each method, examples resampled alike for all members). "
             "\"Pairings\" counts the prompt × finetune member pairs whose own paired bootstrap CI excludes 0.", "",
             "## Members", "", "| member | from | " + " | ".join(
                 f"clean accuracy on {md_escape(d)}" for d in sorted({c.dataset for c in rows})) + " |",
             "|---|---|" + "---|" * len({c.dataset for c in rows})]
    datasets = sorted({(c.task, c.dataset) for c in rows})
    for m in members:
        cells = []
        for _, d in datasets:
            accuracy, n = clean_accuracy(m, d)
            cells.append(f"{100 * accuracy:.1f}% ({n})" if n else "–")
        lines.append(f"| {m.label} | `{md_escape(m.source)}` | " + " | ".join(cells) + " |")
    lines += ["", "## Verdicts", ""]
    for task, dataset in datasets:
        shown = [c for c in rows if (c.task, c.dataset) == (task, dataset)]
        lines.append(f"- **{md_escape(dataset)}** ({task}): {dataset_verdict(shown, len(prompts), len(finetunes))}")
    lines.append("")
    p_head, f_head = " / ".join(m.label for m in prompts), " / ".join(m.label for m in finetunes)
    for task, dataset in datasets:
        shown = [c for c in rows if (c.task, c.dataset) == (task, dataset)]
        lines += [f"## {md_escape(dataset)} ({task})", "", f"{shown[0].n} examples shared by every member per attack.", "",
                  f"| attack | ε | prompt-tuned drops ({p_head}) | finetuned drops ({f_head}) | pooled drop difference F − P (pts) [95% CI] "
                  "| significant | pairings significant: prompt / finetune more robust |",
                  "|---|---|---|---|---|---|---|"]
        for c in shown:
            lines.append(f"| {md_escape(c.attack)} | {format_eps(c)} | {drops_text(c.prompt_drops)} | {drops_text(c.finetune_drops)} | "
                         f"{points_with_ci(c.drop_difference, c.drop_difference_ci)} | "
                         f"{'yes' if c.significant else 'no'} | {c.pairings_for_prompt} / {c.pairings_for_finetune} of {c.pairings} |")
        lines.append("")
    if left_out:
        counts: dict[str, int] = defaultdict(int)
        for dataset, _ in left_out:
            counts[dataset] += 1
        lines += ["Not pooled, because some member lacks them (the keys are in the JSON twin of this file):", ""]
        lines += [f"- {md_escape(d)}: {n} attack setting{'s' if n != 1 else ''}" for d, n in sorted(counts.items())]
        lines.append("")
    lines += ["## Reproduce", "", "```", command, "```", "", "Every number above is computed from the runs' `records.jsonl`.", ""]
    data = {"command": command, "members": [{"label": m.label, "from": m.source, "member": m.member} for m in members],
            "not_pooled": [{"dataset": d, "attack_key": k} for d, k in left_out],
            "settings": [asdict(c) | {"significant": c.significant} for c in rows]}
    return write_markdown_and_json(out, "\n".join(lines), data, "pooled verdict")
