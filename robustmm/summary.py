"""Records -> Summary: every number the report shows, computed from AttackRecords only.

Per (task, dataset, attack configuration) the two members are compared on the *same*
examples: clean and robust accuracy with 95% bootstrap CIs, absolute and relative drop,
attack success rate on the examples both members got right clean, perturbation size,
queries and time; the paired difference of drops (finetuned minus prompt-tuned) with a
paired bootstrap CI, and McNemar's exact test on robust correctness.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

from robustmm import metrics
from robustmm.types import AttackRecord, Status

MEMBERS = ("prompt", "finetune")
CORRECT = 0.5  # a per-example score >= this counts as "correct" for McNemar and success rates


def _mean_of(values) -> float | None:
    values = [v for v in values if v is not None]
    return metrics.mean(values) if values else None


@dataclass(frozen=True)
class MemberStats:
    """One member under one attack configuration (accuracies in [0, 1])."""

    member: str
    model: str
    n: int
    clean_accuracy: float
    clean_ci: tuple[float, float]
    robust_accuracy: float
    robust_ci: tuple[float, float]
    absolute_drop: float
    relative_drop: float
    success_rate_both_correct: float  # ASR on examples both members got right clean
    n_both_correct: int
    succeeded: int
    failed: int
    skipped: int
    mean_linf: float | None
    mean_l2: float | None
    mean_words_changed: float | None  # share of words changed, over attacked examples
    mean_similarity: float | None
    unknown_substitution_share: float | None  # substituted words the tokenizer cannot read
    mean_queries: float
    mean_seconds: float


@dataclass(frozen=True)
class PairedSetting:
    """One attack configuration on one dataset; subclasses add the members compared on it and
    ``drop_difference_ci``, the bootstrap CI of their drop difference."""

    task: str
    dataset: str
    attack: str
    attack_key: str
    modality: str
    eps: float | None

    @property
    def significant(self) -> bool:
        low, high = self.drop_difference_ci
        return low > 0 or high < 0

    @property
    def sort_key(self) -> tuple:
        """Report order: task, dataset, attack, ε (none first), configuration."""
        return (self.task, self.dataset, self.attack, self.eps if self.eps is not None else -1.0, self.attack_key)


@dataclass(frozen=True)
class Comparison(PairedSetting):
    """Prompt-tuned vs finetuned under one attack configuration on one dataset."""

    prompt: MemberStats
    finetune: MemberStats
    drop_difference: float  # finetune drop - prompt drop (> 0: prompt tuning degraded less)
    drop_difference_ci: tuple[float, float]
    mcnemar: dict  # robust correctness: a_only = prompt only right, b_only = finetune only right

    def verdict(self) -> str:
        """One sentence: which member degraded less, and whether the difference is significant."""
        p, f = self.prompt, self.finetune
        who = "prompt tuning was more robust" if self.drop_difference > 0 else (
            "finetuning was more robust" if self.drop_difference < 0 else "both degraded equally")
        sig = "significant" if self.significant else "not significant"
        return (f"Under {self.attack_key}, {who}: accuracy drop {100 * p.absolute_drop:.1f} (prompt-tuned) vs "
                f"{100 * f.absolute_drop:.1f} points (finetuned); the paired difference "
                f"{100 * self.drop_difference:+.1f} points, 95% CI [{100 * self.drop_difference_ci[0]:+.1f}, "
                f"{100 * self.drop_difference_ci[1]:+.1f}], is {sig} (McNemar on robust correctness p = {self.mcnemar['p_value']:.3g}).")


@dataclass
class Summary:
    comparisons: list[Comparison]
    records: list[AttackRecord] = field(repr=False)

    def datasets(self) -> list[tuple[str, str]]:
        return sorted({(c.task, c.dataset) for c in self.comparisons})

    def for_dataset(self, task: str, dataset: str) -> list[Comparison]:
        return [c for c in self.comparisons if (c.task, c.dataset) == (task, dataset)]

    def task_verdict(self, task: str, dataset: str) -> str:
        """One sentence per dataset: was prompt tuning more robust here, and significantly so?"""
        rows = self.for_dataset(task, dataset)
        if not rows:
            return f"No attacks were run on {dataset}."
        more = [c for c in rows if c.drop_difference > 0]
        sig_more = [c for c in more if c.significant]
        sig_less = [c for c in rows if c.drop_difference < 0 and c.significant]
        if len(more) * 2 > len(rows):
            head = f"On {dataset}, prompt tuning was more robust than finetuning under {len(more)} of {len(rows)} attack settings"
        elif len(more) * 2 == len(rows):
            head = f"On {dataset}, neither tuning method was consistently more robust ({len(more)} of {len(rows)} attack settings favour prompt tuning)"
        else:
            head = f"On {dataset}, finetuning was more robust than prompt tuning under {len(rows) - len(more)} of {len(rows)} attack settings"
        return (f"{head}; the difference in accuracy drop is significant (paired bootstrap 95% CI excludes 0) in favour of "
                f"prompt tuning in {len(sig_more)} and of finetuning in {len(sig_less)} of them.")


def _member_stats(member: str, rows: Sequence[AttackRecord], both_correct: set[str], seed: int) -> MemberStats:
    clean = [r.clean_score for r in rows]
    robust = [r.adv_score for r in rows]
    clean_acc, robust_acc = metrics.mean(clean), metrics.robust_accuracy(robust)
    both = [r for r in rows if r.example_id in both_correct]
    attacked = [r for r in rows if r.status is not Status.SKIPPED]
    changed = [r.words_changed / r.words_total for r in attacked if r.words_changed is not None and r.words_total]
    substituted = sum(r.words_changed or 0 for r in attacked if r.unknown_substitutions is not None)
    unknown = sum(r.unknown_substitutions or 0 for r in attacked)
    return MemberStats(
        member=member, model=rows[0].model, n=len(rows),
        clean_accuracy=clean_acc, clean_ci=metrics.bootstrap_ci(clean, seed=seed),
        robust_accuracy=robust_acc, robust_ci=metrics.bootstrap_ci(robust, seed=seed),
        absolute_drop=metrics.absolute_drop(clean_acc, robust_acc), relative_drop=metrics.relative_drop(clean_acc, robust_acc),
        success_rate_both_correct=metrics.attack_success_rate([True] * len(both), [r.adv_score >= CORRECT for r in both]),
        n_both_correct=len(both),
        succeeded=sum(r.status is Status.SUCCEEDED for r in rows), failed=sum(r.status is Status.FAILED for r in rows),
        skipped=sum(r.status is Status.SKIPPED for r in rows),
        mean_linf=_mean_of(r.linf for r in attacked), mean_l2=_mean_of(r.l2 for r in attacked),
        mean_words_changed=metrics.mean(changed) if changed else None,
        mean_similarity=_mean_of(r.similarity for r in attacked),
        unknown_substitution_share=(unknown / substituted) if substituted else None,
        mean_queries=metrics.mean([r.queries for r in attacked]) if attacked else 0.0,
        mean_seconds=metrics.mean([r.seconds for r in attacked]) if attacked else 0.0,
    )


def summarize(records: Sequence[AttackRecord], seed: int = 0) -> Summary:
    """Group records by (task, dataset, attack configuration) and compare the two members.

    Only examples present for both members enter a comparison (the same examples).
    """
    groups: dict[tuple, dict[str, dict[str, AttackRecord]]] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        groups[(r.task, r.dataset, r.attack_key)][r.member][r.example_id] = r
    comparisons = []
    for (task, dataset, key), by_member in sorted(groups.items(), key=lambda kv: _order(kv[0], kv[1])):
        if not all(m in by_member for m in MEMBERS):
            continue
        shared = [i for i in by_member["prompt"] if i in by_member["finetune"]]
        if not shared:
            continue
        p_rows = [by_member["prompt"][i] for i in shared]
        f_rows = [by_member["finetune"][i] for i in shared]
        prompt, finetune, difference, ci, test = paired_stats(("prompt", p_rows), ("finetune", f_rows), seed)
        first = p_rows[0]
        comparisons.append(Comparison(
            task=task, dataset=dataset, attack=first.attack, attack_key=key, modality=first.modality, eps=first.eps,
            prompt=prompt, finetune=finetune, drop_difference=difference, drop_difference_ci=ci, mcnemar=test,
        ))
    return Summary(comparisons, list(records))


def paired_stats(a: tuple[str, Sequence[AttackRecord]], b: tuple[str, Sequence[AttackRecord]], seed: int = 0
                 ) -> tuple[MemberStats, MemberStats, float, tuple[float, float], dict]:
    """Compare two (label, rows) on the same examples (row i of ``a`` and of ``b`` = one example).

    Returns both MemberStats (ASR over the examples both got right clean), the paired drop
    difference mean(drop_b) - mean(drop_a) in [-1, 1] with its paired bootstrap 95% CI, and
    McNemar's exact test on robust correctness (a_only = only ``a`` right).
    """
    (label_a, rows_a), (label_b, rows_b) = a, b
    both = {x.example_id for x, y in zip(rows_a, rows_b, strict=True) if x.clean_score >= CORRECT and y.clean_score >= CORRECT}
    drop_a = [r.clean_score - r.adv_score for r in rows_a]
    drop_b = [r.clean_score - r.adv_score for r in rows_b]
    return (_member_stats(label_a, rows_a, both, seed), _member_stats(label_b, rows_b, both, seed),
            metrics.mean(drop_b) - metrics.mean(drop_a), metrics.paired_bootstrap_ci(drop_b, drop_a, seed=seed),
            metrics.mcnemar([r.adv_score >= CORRECT for r in rows_a], [r.adv_score >= CORRECT for r in rows_b]))


def _order(key: tuple, by_member) -> tuple:
    task, dataset, attack_key = key
    any_row = next(iter(next(iter(by_member.values())).values()))
    return (task, dataset, any_row.attack, any_row.eps if any_row.eps is not None else -1.0, attack_key)
