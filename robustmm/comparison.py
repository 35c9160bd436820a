"""The one paired comparison behind every verdict: ``robustmm attack`` (prompt-tuned vs finetuned),
``robustmm compare`` (one member of two runs) and ``robustmm pool`` (groups of members) all build a
:class:`Comparison` per (dataset, attack setting) and render it with the same tables and sentences.

The headline question is "does the attack break one model more often than the other?", asked where
the answer cannot be confounded by clean accuracy:

- **both-correct set**: the examples *both* sides answer correctly clean (one definition of correct,
  :func:`robustmm.metrics.is_correct`); each side's attack success rate (ASR) is the share of them the
  attack breaks (makes incorrect);
- **difference** = ASR(b) - ASR(a) on that set (> 0: a is more robust), with the **exact McNemar test**
  on its discordant pairs (broken for one side only) and Tango's score interval widened to agree with
  that test (:func:`robustmm.statistics.mcnemar_difference_ci`): it excludes 0 exactly when p < 0.05;
- **Holm**: the settings of a dataset are one family; p-values are Holm-adjusted within it and a side
  "wins" a setting only when its Holm-adjusted p < ``ALPHA`` *and* the difference is at least
  ``TIE_POINTS``; anything else is a tie ("no detectable difference");
- **MDD**: the smallest difference the both-correct set could detect with 80% power at the first
  Holm step (alpha / number of settings), so "no difference" can be told from "too few examples";
- **robust-accuracy difference** over all examples, with a paired bootstrap CI, and a **confound**
  flag when the clean accuracies differ by more than that CI's width.

Pooled comparisons (several members per side) use a two-level bootstrap (members within each side,
examples shared) for the interval and its p-value instead of McNemar: the training runs are units.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Sequence

from robustmm import statistics
from robustmm.metrics import is_correct, relative_drop
from robustmm.types import AttackRecord, Status

ALPHA = 0.05
TIE_POINTS = 0.005  # differences smaller than 0.5 points are ties whatever their p-value
MCNEMAR = "exact McNemar"
BOOTSTRAP = "hierarchical bootstrap"


@dataclass(frozen=True)
class Side:
    """One side of a comparison (a model, or a group of members) under one attack setting.

    Accuracies and rates are shares in [0, 1]; ``clean_score`` / ``adv_score`` are mean per-example
    scores (the official VQA accuracy for VQA); ``asr`` and ``broken`` are on the both-correct set.
    ``members`` holds each member's ASR for a pooled side (empty for a single model).
    """

    label: str
    model: str
    n: int
    clean_accuracy: float
    clean_ci: tuple[float, float]
    robust_accuracy: float
    robust_ci: tuple[float, float]
    clean_score: float
    adv_score: float
    drop: float
    relative_drop: float
    asr: float
    broken: int
    succeeded: int
    failed: int
    skipped: int
    mean_linf: float | None = None
    mean_l2: float | None = None
    mean_words_changed: float | None = None  # share of words changed, over attacked examples
    mean_similarity: float | None = None
    unknown_substitution_share: float | None = None
    mean_queries: float = 0.0
    mean_seconds: float = 0.0
    members: tuple[float, ...] = ()


@dataclass(frozen=True)
class Comparison:
    """Side ``a`` vs side ``b`` under one attack setting on one dataset (differences in [-1, 1])."""

    task: str
    dataset: str
    attack: str
    attack_key: str
    modality: str
    eps: float | None
    a: Side
    b: Side
    n: int  # examples both sides were attacked on
    n_both_correct: int
    only_a_broken: int  # discordant pairs: broken for a only / for b only (McNemar)
    only_b_broken: int
    difference: float  # ASR(b) - ASR(a) on the both-correct set (> 0: a more robust)
    ci: tuple[float, float]
    p_value: float
    p_holm: float
    family_size: int  # settings in the Holm family (this dataset)
    mdd: float  # minimum detectable difference at 80% power, first Holm step
    robust_difference: float  # robust accuracy a - b over all n examples (> 0: a more robust)
    robust_ci: tuple[float, float]
    clean_difference: float  # clean accuracy a - b
    test: str = MCNEMAR

    @property
    def outcome(self) -> str:
        """``a`` or ``b`` (the side significantly less broken after Holm) or ``tie``."""
        if self.p_holm >= ALPHA or abs(self.difference) < TIE_POINTS or self.difference != self.difference:
            return "tie"
        return "a" if self.difference > 0 else "b"

    @property
    def significant(self) -> bool:
        return self.outcome != "tie"

    @property
    def confounded(self) -> bool:
        """Clean accuracies differ by more than the robust-accuracy difference's CI width: a drop or
        robust-accuracy comparison then mixes in clean accuracy (the both-correct ASR does not)."""
        low, high = self.robust_ci
        return abs(self.clean_difference) > (high - low)

    @property
    def on_subset(self) -> bool:
        """An attack run on a seeded fraction of the examples (``subset=``): there to check attack strength, too few
        examples to decide; kept out of the verdict and Holm-adjusted in a family of its own."""
        return "subset=" in self.attack_key

    @property
    def sort_key(self) -> tuple:
        """Report order: task, dataset, attack, ε (none first), configuration."""
        return (self.task, self.dataset, self.attack, self.eps if self.eps is not None else -1.0, self.attack_key)


def _mean_of(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def side_of(label: str, rows: Sequence[AttackRecord], both_correct: set[str], seed: int = 0) -> Side:
    """A single model's :class:`Side` from its records of one setting (``both_correct``: example ids)."""
    clean = [float(is_correct(r.clean_score)) for r in rows]
    robust = [float(is_correct(r.adv_score)) for r in rows]
    clean_acc, robust_acc = statistics.mean(clean), statistics.mean(robust)
    on_both = [r for r in rows if r.example_id in both_correct]
    broken = sum(not is_correct(r.adv_score) for r in on_both)
    attacked = [r for r in rows if r.status is not Status.SKIPPED]
    changed = [r.words_changed / r.words_total for r in attacked if r.words_changed is not None and r.words_total]
    substituted = sum(r.words_changed or 0 for r in attacked if r.unknown_substitutions is not None)
    unknown = sum(r.unknown_substitutions or 0 for r in attacked)
    return Side(
        label=label, model=rows[0].model, n=len(rows),
        clean_accuracy=clean_acc, clean_ci=statistics.bootstrap_ci(clean, seed=seed),
        robust_accuracy=robust_acc, robust_ci=statistics.bootstrap_ci(robust, seed=seed),
        clean_score=statistics.mean([r.clean_score for r in rows]), adv_score=statistics.mean([r.adv_score for r in rows]),
        drop=clean_acc - robust_acc, relative_drop=relative_drop(clean_acc, robust_acc),
        asr=broken / len(on_both) if on_both else float("nan"), broken=broken,
        succeeded=sum(r.status is Status.SUCCEEDED for r in rows), failed=sum(r.status is Status.FAILED for r in rows),
        skipped=sum(r.status is Status.SKIPPED for r in rows),
        mean_linf=_mean_of(r.linf for r in attacked), mean_l2=_mean_of(r.l2 for r in attacked),
        mean_words_changed=statistics.mean(changed) if changed else None,
        mean_similarity=_mean_of(r.similarity for r in attacked),
        unknown_substitution_share=(unknown / substituted) if substituted else None,
        mean_queries=statistics.mean([r.queries for r in attacked]) if attacked else 0.0,
        mean_seconds=statistics.mean([r.seconds for r in attacked]) if attacked else 0.0,
    )


def compare(rows_a: Sequence[AttackRecord], rows_b: Sequence[AttackRecord], labels: tuple[str, str] = ("a", "b"),
            seed: int = 0) -> Comparison:
    """Compare two models on the same examples (row i of each = one example) under one setting.

    Not yet Holm-adjusted (``p_holm`` = ``p_value``, family of 1): see :func:`adjust_holm`.
    """
    both = {x.example_id for x, y in zip(rows_a, rows_b, strict=True) if is_correct(x.clean_score) and is_correct(y.clean_score)}
    a, b = side_of(labels[0], rows_a, both, seed), side_of(labels[1], rows_b, both, seed)
    pairs = [(x, y) for x, y in zip(rows_a, rows_b) if x.example_id in both]
    only_a = sum(not is_correct(x.adv_score) and is_correct(y.adv_score) for x, y in pairs)
    only_b = sum(is_correct(x.adv_score) and not is_correct(y.adv_score) for x, y in pairs)
    n_both = len(pairs)
    p = statistics.mcnemar_p(only_a, only_b)
    robust_a = [float(is_correct(r.adv_score)) for r in rows_a]
    robust_b = [float(is_correct(r.adv_score)) for r in rows_b]
    first = rows_a[0]
    return Comparison(
        task=first.task, dataset=first.dataset, attack=first.attack, attack_key=first.attack_key, modality=first.modality,
        eps=first.eps, a=a, b=b, n=len(rows_a), n_both_correct=n_both, only_a_broken=only_a, only_b_broken=only_b,
        difference=(only_b - only_a) / n_both if n_both else float("nan"),
        ci=statistics.mcnemar_difference_ci(only_a, only_b, n_both, 1 - ALPHA) if n_both else (float("nan"), float("nan")),
        p_value=p, p_holm=p, family_size=1,
        mdd=statistics.mcnemar_mdd(n_both, (only_a + only_b) / n_both if n_both else 0.0, ALPHA),
        robust_difference=a.robust_accuracy - b.robust_accuracy,
        robust_ci=statistics.paired_bootstrap_ci(robust_a, robust_b, seed=seed),
        clean_difference=a.clean_accuracy - b.clean_accuracy,
    )


def compare_groups(groups_a: Sequence[Sequence[Sequence[AttackRecord]]], groups_b: Sequence[Sequence[Sequence[AttackRecord]]],
                   labels: tuple[str, str], seed: int = 0) -> Comparison:
    """Compare two groups of members (e.g. differently seeded prompt-tuned vs finetuned models) under one setting.

    ``groups_a`` / ``groups_b``: one list of rows per member, row i of every member = the same example.
    The both-correct set is the examples *every* member answers correctly clean; each side's ASR is the
    mean of its members' ASRs; the interval and its two-sided p-value come from the same two-level
    bootstrap (members resampled within each side, examples resampled alike for all), so the training
    runs are the units and the interval widens as they disagree.
    """
    every = [rows for group in (groups_a, groups_b) for rows in group]
    ids = [r.example_id for r in every[0]]
    both = {i for k, i in enumerate(ids) if all(is_correct(rows[k].clean_score) for rows in every)}
    keep = [k for k, i in enumerate(ids) if i in both]

    def broken(rows):
        return [float(not is_correct(rows[k].adv_score)) for k in keep]

    def pooled(label: str, group) -> Side:
        sides = [side_of(label, rows, both, seed) for rows in group]
        first = sides[0]
        mean = statistics.mean
        return replace(first, model=" / ".join(s.model for s in sides),
                       clean_accuracy=mean([s.clean_accuracy for s in sides]), robust_accuracy=mean([s.robust_accuracy for s in sides]),
                       clean_score=mean([s.clean_score for s in sides]), adv_score=mean([s.adv_score for s in sides]),
                       drop=mean([s.drop for s in sides]), relative_drop=mean([s.relative_drop for s in sides]),
                       asr=mean([s.asr for s in sides]), broken=sum(s.broken for s in sides),
                       members=tuple(s.asr for s in sides))

    a, b = pooled(labels[0], groups_a), pooled(labels[1], groups_b)
    if keep:
        low, high, p = statistics.hierarchical_bootstrap([broken(r) for r in groups_a], [broken(r) for r in groups_b], seed=seed)
    else:
        low, high, p = float("nan"), float("nan"), 1.0
    robust = [[float(is_correct(r.adv_score)) for r in rows] for rows in every]
    r_low, r_high, _ = statistics.hierarchical_bootstrap(robust[len(groups_a):], robust[:len(groups_a)], seed=seed)
    first = every[0][0]
    return Comparison(
        task=first.task, dataset=first.dataset, attack=first.attack, attack_key=first.attack_key, modality=first.modality,
        eps=first.eps, a=a, b=b, n=len(ids), n_both_correct=len(keep), only_a_broken=0, only_b_broken=0,
        difference=b.asr - a.asr if keep else float("nan"), ci=(low, high), p_value=p, p_holm=p, family_size=1,
        mdd=float("nan"), robust_difference=a.robust_accuracy - b.robust_accuracy, robust_ci=(r_low, r_high),
        clean_difference=a.clean_accuracy - b.clean_accuracy, test=BOOTSTRAP,
    )


def adjust_holm(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """Holm-adjust the p-values within each (task, dataset) family (settings on seeded subsets form a family of their
    own) and recompute the MDD at that family's first Holm step (alpha / family size); returns the comparisons
    sorted by :attr:`Comparison.sort_key`."""
    families: dict[tuple[str, str, bool], list[Comparison]] = defaultdict(list)
    for c in comparisons:
        families[(c.task, c.dataset, c.on_subset)].append(c)
    out = []
    for family in families.values():
        m = len(family)
        for c, p_holm in zip(family, statistics.holm([c.p_value for c in family])):
            mdd = c.mdd
            if c.test == MCNEMAR and c.n_both_correct:
                mdd = statistics.mcnemar_mdd(c.n_both_correct, (c.only_a_broken + c.only_b_broken) / c.n_both_correct, ALPHA / m)
            out.append(replace(c, p_holm=p_holm, family_size=m, mdd=mdd))
    return sorted(out, key=lambda c: c.sort_key)


def by_setting(records: Sequence[AttackRecord], member: str) -> dict[tuple[str, str, str], dict[str, AttackRecord]]:
    """``member``'s records as {(task, dataset, attack_key): {example_id: record}}, in record order."""
    out: dict[tuple, dict[str, AttackRecord]] = defaultdict(dict)
    for r in records:
        if r.member == member:
            out[(r.task, r.dataset, r.attack_key)][r.example_id] = r
    return out
