"""Comparisons -> markdown: the tables and sentences every verdict is written with (``robustmm attack``'s
report, ``compare`` and ``pool`` alike), and the run report with its figures and summary.json.

Writes only inside the folder (or file) it is given, each file through a temporary name renamed
into place, so a failure never leaves a half-written report.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from robustmm.comparison import ALPHA, BOOTSTRAP, TIE_POINTS, Comparison, Side
from robustmm.errors import RobustMMError
from robustmm.metrics import CORRECT_THRESHOLD

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")
_EPS_IN_KEY = re.compile(r"\beps=([^,)]+)")


def md_escape(text: str) -> str:
    """Escape dataset text so it cannot break markdown tables or formatting (newlines -> spaces)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text).replace("\r", " ").replace("\n", " "))


def percent(value: float | None) -> str:
    """A share in [0, 1] as a percentage with one decimal; '–' for None / NaN."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def points(value: float) -> str:
    """A difference in [-1, 1] in signed points, '+7.3'; '–' for NaN."""
    return "–" if value != value else f"{100 * value:+.1f}"


def points_with_ci(value: float, ci: tuple[float, float]) -> str:
    """A difference in [-1, 1] and its CI in signed points: '+12.0 [+3.0, +21.0]'."""
    return f"{points(value)} [{points(ci[0])}, {points(ci[1])}]"


def p_text(p: float) -> str:
    return "–" if p != p else ("< 0.001" if p < 0.001 else f"{p:.3g}")


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file that is fsynced and renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_markdown_and_json(out: str | Path, markdown: str, data: dict, what: str) -> Path:
    """Write ``markdown`` to ``out`` and ``data`` to ``out`` with suffix .json, each atomically; one
    ``RobustMMError`` sentence if they cannot be written."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out.with_suffix(".json"), json.dumps(data, indent=2, default=str) + "\n")
        write_atomic(out, markdown)
    except OSError as err:
        raise RobustMMError(f"Cannot write the {what} to {out}: {err.strerror or err}.") from err
    return out


def format_eps(c: Comparison) -> str:
    """ε as the canonical key writes it (``8/255`` on the pixel scale, ``1`` for an L2 radius, ``0.1`` on the
    embedding scale); ``–`` if the attack has none."""
    if c.eps is None:
        return "–"
    from robustmm.attacks.base import format_key_value

    found = _EPS_IN_KEY.search(c.attack_key)
    if found and len(found.group(1)) <= 12:
        return found.group(1)
    return format_key_value(float(c.eps), pixel_scale=c.modality in ("image", "joint"))  # keys written before canonical keys


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def headline_table(rows: Sequence[Comparison], labels: tuple[str, str]) -> list[str]:
    """The paired question per setting: attack success on the examples both sides answer correctly clean."""
    a, b = labels
    pooled = rows and rows[0].test == BOOTSTRAP
    lines = [
        f"| attack | ε | both correct | ASR {a} | ASR {b} | difference {b} − {a} (pts) [95% CI] | "
        + ("" if pooled else f"broken for {a} only / {b} only | ") + "p | Holm p | MDD (pts) | more robust |",
        "|---|---|---|---|---|---|" + ("" if pooled else "---|") + "---|---|---|---|",
    ]
    for c in rows:
        winner = {"a": a, "b": b, "tie": "no detectable difference"}[c.outcome]
        lines.append(
            f"| {md_escape(c.attack)} | {format_eps(c)} | {c.n_both_correct} | {percent(c.a.asr)} | {percent(c.b.asr)} | "
            f"{points_with_ci(c.difference, c.ci)} | " + ("" if pooled else f"{c.only_a_broken} / {c.only_b_broken} | ")
            + f"{p_text(c.p_value)} | {p_text(c.p_holm)} | {percent(c.mdd)} | {winner} |")
    return lines


def _perturbation(s: Side, c: Comparison) -> str:
    parts = []
    pixel = c.modality in ("image", "joint")
    if s.mean_linf is not None:
        parts.append(f"L∞ {s.mean_linf * 255:.3g}/255" if pixel else f"L∞ {s.mean_linf:.3g}")
    if s.mean_l2 is not None and c.modality != "embedding":
        parts.append(f"L2 {s.mean_l2:.3g}")
    if s.mean_words_changed is not None:
        parts.append(f"{100 * s.mean_words_changed:.0f}% words")
    return ", ".join(parts) or "–"


def accuracy_table(rows: Sequence[Comparison], labels: tuple[str, str], scores: bool = False) -> list[str]:
    """Clean and robust accuracy of each side per setting (all examples), with the robust-accuracy difference.

    ``scores``: also show the mean per-example score (the official VQA accuracy) clean -> under attack.
    """
    a, b = labels
    head = "| attack | ε | model | clean acc [95% CI] | robust acc [95% CI] | "
    head += "mean score clean → attacked | " if scores else ""
    head += f"drop (pts) | robust acc {a} − {b} (pts) [95% CI] | perturbation | queries | s/example |"
    lines = [head, "|---|---|---|---|---|" + ("---|" if scores else "") + "---|---|---|---|---|"]
    for c in rows:
        for s, first in ((c.a, True), (c.b, False)):
            diff = points_with_ci(c.robust_difference, c.robust_ci) + (" ⚠" if c.confounded else "") if first else ""
            line = (f"| {md_escape(c.attack)} | {format_eps(c)} | {md_escape(s.label)} | {percent(s.clean_accuracy)} "
                    f"[{percent(s.clean_ci[0])}, {percent(s.clean_ci[1])}] | {percent(s.robust_accuracy)} "
                    f"[{percent(s.robust_ci[0])}, {percent(s.robust_ci[1])}] | ")
            if scores:
                line += f"{percent(s.clean_score)} → {percent(s.adv_score)} | "
            line += f"{percent(s.drop)} | {diff} | {_perturbation(s, c)} | {s.mean_queries:.1f} | {s.mean_seconds:.3f} |"
            lines.append(line)
    return lines


def how_to_read(labels: tuple[str, str], pooled: bool = False) -> list[str]:
    """The statistics in a few sentences, for the top of every report."""
    a, b = labels
    test = ("a two-level bootstrap over the members (training runs) of each side and the examples gives the 95% CI "
            "and its p-value (the runs are the units)" if pooled else
            "the exact McNemar test on the examples broken for one side only gives p, and the 95% CI is Tango's score "
            "interval, widened where needed to agree with that test: it excludes 0 exactly when p < 0.05")
    return [
        f"An answer is *correct* when its score (official VQA accuracy, or exact match) is at least {CORRECT_THRESHOLD:g}; "
        "an attack *breaks* an example when the answer is correct clean and incorrect under attack. "
        f"The headline per attack setting is the attack success rate (ASR) on the examples **both** sides answer "
        f"correctly clean, so a difference in clean accuracy cannot pass for robustness: "
        f"difference = ASR({b}) − ASR({a}), > 0 when {a} is broken less often; {test}. "
        f"p-values are Holm-adjusted over the settings of a dataset and a side counts as more robust only when the "
        f"Holm-adjusted p < {ALPHA:g} and the difference is at least {100 * TIE_POINTS:g} points; anything else is "
        "*no detectable difference*. MDD is the smallest difference the both-correct set detects with 80% power at the "
        "first Holm step: \"no detectable difference\" with a large MDD means too few examples, not equal robustness. "
        "Accuracies carry 95% percentile bootstrap CIs over examples; ⚠ marks settings whose clean accuracies differ "
        "by more than the robust-accuracy difference's CI width (compare drops there with care).",
    ]


# ---------------------------------------------------------------------------
# Sentences
# ---------------------------------------------------------------------------


def setting_verdict(c: Comparison, names: tuple[str, str]) -> str:
    """One sentence per setting: how often the attack broke each side, the difference and what it supports."""
    if c.n_both_correct == 0:
        return f"Under {c.attack_key}, no example was answered correctly by both sides: nothing to compare."
    test = (f"bootstrap p = {p_text(c.p_value)}" if c.test == BOOTSTRAP else f"exact McNemar p = {p_text(c.p_value)}")
    claim = {"a": f"{names[0]} was more robust", "b": f"{names[1]} was more robust",
             "tie": "no detectable difference"}[c.outcome]
    if c.outcome == "tie" and c.mdd == c.mdd:
        claim += f" (these examples detect {100 * c.mdd:.1f} points with 80% power)"
    return (f"Under {c.attack_key}, the attack broke {percent(c.a.asr)}% of {names[0]}'s and {percent(c.b.asr)}% of "
            f"{names[1]}'s answers on the {c.n_both_correct} examples both answered correctly (difference "
            f"{points_with_ci(c.difference, c.ci)} points; {test}, Holm-adjusted {p_text(c.p_holm)} over "
            f"{c.family_size} settings): {claim}.")


def dataset_verdict(rows: Sequence[Comparison], names: tuple[str, str]) -> str:
    """One sentence per dataset: wins, losses and ties after Holm, the detectable differences, and cautions."""
    if not rows:
        return "No attack setting was compared."
    rows = [c for c in rows if not c.on_subset] or list(rows)  # seeded-subset settings check strength, not decide
    dataset = rows[0].dataset
    wins = {k: [c for c in rows if c.outcome == k] for k in ("a", "b", "tie")}
    test = "a two-level bootstrap over members and examples" if rows[0].test == BOOTSTRAP else \
        "exact McNemar on the examples both answered correctly"
    mdds = [c.mdd for c in rows if c.mdd == c.mdd]
    detect = (f"; differences detectable with 80% power: {100 * min(mdds):.1f}–{100 * max(mdds):.1f} points" if mdds else "")
    head = [c for c in rows if c.attack == "worst-case"]
    lead = ""
    if head:
        c = head[-1]
        lead = f"Under the worst-case image ensemble ({format_eps(c)}), {setting_verdict(c, names)[0].lower()}{setting_verdict(c, names)[1:]} "
    sentence = (f"{lead}On {dataset}, {names[0]} was significantly more robust under {len(wins['a'])} and {names[1]} under "
                f"{len(wins['b'])} of {len(rows)} attack settings, with no detectable difference under {len(wins['tie'])} "
                f"({test}, Holm-adjusted, α = {ALPHA:g}{detect}).")
    confounded = [c for c in rows if c.confounded]
    if confounded:
        gap = max(abs(c.clean_difference) for c in confounded)
        sentence += (f" Caution: clean accuracies differ by up to {100 * gap:.1f} points, more than the robust-accuracy CI "
                     f"width under {len(confounded)} settings, so drops and robust accuracies there mix in clean accuracy; "
                     "the ASR comparison above is on the both-correct examples and is not affected.")
    return sentence


def checked_verdict(summary, task: str, dataset: str, checks) -> str:
    """The dataset verdict, qualified when the member it calls more robust (under the headline setting: the
    worst-case ensemble if run, else most settings) fails an evaluation check, plus every member's warnings."""
    from robustmm.checks import qualify_verdict, verdict_warnings
    from robustmm.summary import MEMBERS

    rows = [c for c in summary.for_dataset(task, dataset) if not c.on_subset]
    sentence = summary.task_verdict(task, dataset)
    head = [c for c in rows if c.attack == "worst-case"] or rows
    wins = {side: sum(c.outcome == side for c in head) for side in ("a", "b")}
    winner = None if wins["a"] == wins["b"] else MEMBERS[0] if wins["a"] > wins["b"] else MEMBERS[1]
    scope = f"{task}/{dataset}"
    sentence = qualify_verdict(sentence, winner, checks, scope)
    warnings = [w for w in verdict_warnings(checks, scope) if winner is None or not w.startswith(_member_word(winner))]
    return " ".join([sentence, *(w.rstrip(".") + "." for w in warnings)])


def _member_word(member: str) -> str:
    from robustmm.checks import member_label

    return member_label(member)


# ---------------------------------------------------------------------------
# The run report
# ---------------------------------------------------------------------------


def plot_eps_curves(rows: Sequence[Comparison], path: Path) -> bool:
    """Robust accuracy vs ε for both sides, one panel per pixel attack with 2+ ε values."""
    by_attack: dict[str, list[Comparison]] = defaultdict(list)
    for c in rows:
        if c.eps is not None and c.modality in ("image", "joint"):
            by_attack[c.attack].append(c)
    panels = {a: sorted(cs, key=lambda c: c.eps) for a, cs in by_attack.items() if len({c.eps for c in cs}) >= 2}
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (attack, cs) in zip(axes[0], panels.items()):
        pixel = "/255" in format_eps(cs[0])
        xs = [0.0] + [c.eps * (255 if pixel else 1) for c in cs]
        for side, style in (("a", "o-"), ("b", "s--")):
            stats = [getattr(c, side) for c in cs]
            ys = [100 * stats[0].clean_accuracy] + [100 * s.robust_accuracy for s in stats]
            lo = [100 * stats[0].clean_ci[0]] + [100 * s.robust_ci[0] for s in stats]
            hi = [100 * stats[0].clean_ci[1]] + [100 * s.robust_ci[1] for s in stats]
            ax.plot(xs, ys, style, label=stats[0].label)
            ax.fill_between(xs, lo, hi, alpha=0.15)
        ax.set_title(attack)
        ax.set_xlabel("ε (×1/255)" if pixel else "ε")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def render(summary, run_dir: str | Path, meta: dict, extra_sections: dict[tuple[str, str], list[str]] | None = None) -> Path:
    """Write ``report.md``, figures and ``summary.json`` into ``run_dir``; return the report path.

    ``extra_sections`` adds markdown lines at the end of a (task, dataset) section.
    """
    from robustmm.gallery import Gallery
    from robustmm.summary import LABELS, NAMES

    run_dir = Path(run_dir)
    figures = run_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    gallery = Gallery(run_dir / "gallery").entries()
    lines = [f"# robustmm report: {md_escape(meta.get('run', run_dir.name))}", "",
             "Is a prompt-tuned model more or less robust than a finetuned one of the same backbone? Both members of "
             "the pair are attacked white-box on the same examples with the same per-example random draws.", ""]
    from robustmm.attacks.ensemble import component_table
    from robustmm.checks import checks_table, run_checks

    checks = run_checks([r for r in summary.records if r.member in ("prompt", "finetune")])
    verdicts = {(t, d): checked_verdict(summary, t, d, checks) for t, d in summary.datasets()}
    lines += ["## Verdicts", ""]
    for task, dataset in summary.datasets():
        lines.append(f"- **{md_escape(dataset)}** ({task}): {md_escape(verdicts[(task, dataset)])}")
    lines += ["", "How to read: " + how_to_read(LABELS)[0], ""]
    for task, dataset in summary.datasets():
        rows = summary.for_dataset(task, dataset)
        first = rows[0]
        lines += [f"## {md_escape(dataset)} ({task})", "",
                  f"Models: prompt-tuned `{md_escape(first.a.model)}`, finetuned `{md_escape(first.b.model)}`; "
                  f"{max(c.n for c in rows)} examples per attack setting (fewer for those on seeded subsets).", ""]
        lines += [*(meta.get("members") or {}).get(dataset, []), ""] if (meta.get("members") or {}).get(dataset) else []
        deciding = [c for c in rows if not c.on_subset]
        lines += ["### Attack success on the examples both members answered correctly", ""]
        lines += headline_table(deciding, LABELS) + [""]
        lines += [f"- {md_escape(setting_verdict(c, NAMES))}" for c in deciding] + [""]
        checking = [c for c in rows if c.on_subset]
        if checking:
            lines += ["Settings run on seeded subsets of the examples to check attack strength (the same examples for "
                      "both members; too few to decide anything, so not part of the verdict; Holm-adjusted among "
                      "themselves):", ""] + headline_table(checking, LABELS) + [""]
        lines += ["### Accuracy under attack (all examples)", ""]
        lines += accuracy_table(rows, LABELS, scores=task == "vqa") + [""]
        figure = figures / f"eps-curve-{re.sub(r'[^A-Za-z0-9_-]+', '_', dataset)}.png"
        if plot_eps_curves(rows, figure):
            lines += [f"![robust accuracy vs eps on {md_escape(dataset)}](figures/{figure.name})", ""]
        from robustmm.transfer import transfer_lines

        ours = [r for r in summary.records if (r.task, r.dataset) == (task, dataset)]
        labels = (meta.get("transfer_labels") or {}).get(dataset) or dict(zip(("prompt", "finetune"), LABELS))
        transfer = transfer_lines(ours, labels)
        if transfer:
            lines += ["### Transfer: adversarial images of one model, evaluated on another", "",
                      "Rows: the model the images were crafted on; columns: the model they are shown to; the diagonal "
                      "is the white-box attack itself. A row that breaks the other model more than that model's own "
                      "white-box attack does points to gradient masking in that model.", ""] + transfer
        components = component_table(ours)
        if components:
            lines += ["### Worst-case ensemble: which component broke each example", ""] + components + [""]
        lines += (extra_sections or {}).get((task, dataset), [])
        shown = [g for g in gallery if g["dataset"] == dataset]
        if shown:
            lines += ["Adversarial examples (clean | adversarial | perturbation magnified):", "",
                      "| image | model | attack | question / hypothesis | answer |", "|---|---|---|---|---|"]
            for g in shown:
                text = md_escape(g["text"]) if g["text"] == g["adv_text"] else f"{md_escape(g['text'])} → {md_escape(g['adv_text'])}"
                label = dict(zip(("prompt", "finetune"), LABELS)).get(g["member"], g["member"])
                lines.append(f"| ![](gallery/{g['image']}) | {label} | {md_escape(g['attack_key'])} | {text} | "
                             f"{md_escape(g['clean_prediction'])} → {md_escape(g['adv_prediction'])} |")
            lines.append("")
    if checks:
        lines += ["## Evaluation checks: were the attacks strong enough?", "",
                  "Computed from the records above, per member and dataset (Carlini et al. 2019; AutoAttack's checks): "
                  "PASS, WARN (with the numbers that fail) or not run (the settings it compares are not in this run; "
                  "`--preset cpu-checks` or `gpu` adds them).", ""] + checks_table(checks) + [""]
    from robustmm.attacks.text.audit import audit_markdown

    audit = audit_markdown(summary.records, seed=int(meta.get("seed", 0) or 0))
    if audit:
        lines += ["## Text attacks: do the edits keep the label?", ""] + audit[2:] + [""]
        for dataset, protected in sorted((meta.get("protected_words") or {}).items()):
            shown = ", ".join(protected["words"][:60]) + (" ..." if protected["size"] > 60 else "")
            lines += [f"Protected words of {md_escape(dataset)} ({protected['size']}, from the whole split): {md_escape(shown)}", ""]
    lines += ["## Reproduce", "", "```", str(meta.get("command", "")), "```", "",
              "| setting | value |", "|---|---|"]
    for key in ("seed", "device", "batch_size", "limit", "examples", "stopping", "wall_seconds", "started", "records",
                "resumed_records", "identity"):
        if key in meta:
            lines.append(f"| {key} | {md_escape(meta[key])} |")
    for name, version in sorted(meta.get("versions", {}).items()):
        lines.append(f"| {md_escape(name)} | {md_escape(version)} |")
    lines += ["", "Attack settings:", ""] + [f"- `{c}`" for c in sorted({c.attack_key for c in summary.comparisons})]
    lines += ["", "Every number above is computed from `records.jsonl` in this folder; `robustmm report` re-renders it.", ""]

    data = {"meta": meta, "verdicts": {d: verdicts[(t, d)] for t, d in summary.datasets()},
            "checks": [asdict(c) for c in checks],
            "comparisons": [asdict(c) | {"outcome": c.outcome, "confounded": c.confounded, "verdict": setting_verdict(c, NAMES)}
                            for c in summary.comparisons]}
    write_atomic(run_dir / "summary.json", json.dumps(data, indent=2, default=str) + "\n")
    report = run_dir / "report.md"
    write_atomic(report, "\n".join(lines))
    return report
