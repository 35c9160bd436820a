"""Summary -> markdown report, figures and summary.json in a run folder.

Writes only inside the folder it is given. The markdown is written to a temporary file
and renamed into place last, so a failure never leaves a half-written ``report.md``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from robustmm.errors import RobustMMError
from robustmm.gallery import Gallery
from robustmm.summary import Comparison, MemberStats, Summary

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def md_escape(text: str) -> str:
    """Escape dataset text so it cannot break markdown tables or formatting (newlines -> spaces)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text).replace("\r", " ").replace("\n", " "))


def percent(value: float | None) -> str:
    """A share in [0, 1] as a percentage with one decimal; '–' for None / NaN."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def points_with_ci(value: float, ci: tuple[float, float]) -> str:
    """A difference in [-1, 1] and its CI in signed points: '+12.0 [+3.0, +21.0]'."""
    return f"{100 * value:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def write_markdown_and_json(out: str | Path, markdown: str, data: dict, what: str) -> Path:
    """Write ``markdown`` to ``out`` and ``data`` to ``out`` with suffix .json, each through a temporary
    file renamed into place (never half-written); one ``RobustMMError`` sentence if they cannot be written."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for path, text in ((out.with_suffix(".json"), json.dumps(data, indent=2, default=str) + "\n"), (out, markdown)):
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
    except OSError as err:
        raise RobustMMError(f"Cannot write the {what} to {out}: {err.strerror or err}.") from err
    return out


def _ci(ci: tuple[float, float]) -> str:
    return f"[{percent(ci[0])}, {percent(ci[1])}]"


def format_eps(c: Comparison) -> str:
    """ε as shown to users: ``8/255`` for pixel attacks, the raw value for embedding attacks, ``–`` if none."""
    if c.eps is None:
        return "–"
    return f"{c.eps * 255:g}/255" if c.modality in ("image", "joint") else f"{c.eps:g}"


def _perturbation(s: MemberStats, modality: str) -> str:
    parts = []
    if s.mean_linf is not None:
        parts.append(f"L∞ {s.mean_linf * (255 if modality in ('image', 'joint') else 1):.3g}{'/255' if modality in ('image', 'joint') else ''}")
    if s.mean_l2 is not None and modality != "embedding":
        parts.append(f"L2 {s.mean_l2:.3g}")
    if s.mean_words_changed is not None:
        parts.append(f"{100 * s.mean_words_changed:.0f}% words")
    return ", ".join(parts) or "–"


def _label(member: str) -> str:
    return {"prompt": "prompt-tuned", "finetune": "finetuned"}.get(member, member)


def comparison_table(rows: list[Comparison]) -> list[str]:
    lines = [
        "| attack | ε | model | clean acc [95% CI] | robust acc [95% CI] | drop (pts) | rel. drop | ASR on both-correct | perturbation | queries | s/example |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in rows:
        for s in (c.prompt, c.finetune):
            lines.append(
                f"| {md_escape(c.attack)} | {format_eps(c)} | {_label(s.member)} | {percent(s.clean_accuracy)} {_ci(s.clean_ci)} | "
                f"{percent(s.robust_accuracy)} {_ci(s.robust_ci)} | {percent(s.absolute_drop)} | {percent(s.relative_drop)}% | "
                f"{percent(s.success_rate_both_correct)}% (n={s.n_both_correct}) | {_perturbation(s, c.modality)} | "
                f"{s.mean_queries:.1f} | {s.mean_seconds:.3f} |"
            )
    return lines


def significance_table(rows: list[Comparison]) -> list[str]:
    lines = [
        "| attack | ε | drop difference, finetuned − prompt-tuned (pts) [95% CI] | significant | McNemar: only prompt-tuned right / only finetuned right | McNemar p |",
        "|---|---|---|---|---|---|",
    ]
    for c in rows:
        lines.append(
            f"| {md_escape(c.attack)} | {format_eps(c)} | {points_with_ci(c.drop_difference, c.drop_difference_ci)} | "
            f"{'yes' if c.significant else 'no'} | "
            f"{c.mcnemar['a_only']} / {c.mcnemar['b_only']} | {c.mcnemar['p_value']:.3g} |"
        )
    return lines


def plot_eps_curves(rows: list[Comparison], path: Path) -> bool:
    """Robust accuracy vs ε for both members, one panel per pixel attack with 2+ ε values."""
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
        xs = [0.0] + [c.eps * 255 for c in cs]
        for member, style in (("prompt", "o-"), ("finetune", "s--")):
            stats = [getattr(c, member) for c in cs]
            ys = [100 * stats[0].clean_accuracy] + [100 * s.robust_accuracy for s in stats]
            lo = [100 * stats[0].clean_ci[0]] + [100 * s.robust_ci[0] for s in stats]
            hi = [100 * stats[0].clean_ci[1]] + [100 * s.robust_ci[1] for s in stats]
            ax.plot(xs, ys, style, label=_label(member))
            ax.fill_between(xs, lo, hi, alpha=0.15)
        ax.set_title(attack)
        ax.set_xlabel("ε (×1/255)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def render(summary: Summary, run_dir: str | Path, meta: dict) -> Path:
    """Write ``report.md``, figures and ``summary.json`` into ``run_dir``; return the report path."""
    run_dir = Path(run_dir)
    figures = run_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    gallery = Gallery(run_dir / "gallery").entries()
    lines = [f"# robustmm report: {md_escape(meta.get('run', run_dir.name))}", ""]
    lines += ["Is a prompt-tuned model more or less robust than a finetuned one of the same backbone? "
              "Both models of each pair are attacked white-box on the same examples. Accuracies in %; "
              "CIs are 95% percentile bootstrap intervals over examples; \"drop\" is clean minus robust accuracy; "
              "ASR is the attack success rate on the examples both models answered correctly clean.", ""]
    lines += ["## Verdicts", ""]
    for task, dataset in summary.datasets():
        lines.append(f"- **{md_escape(dataset)}** ({task}): {summary.task_verdict(task, dataset)}")
    lines.append("")
    for task, dataset in summary.datasets():
        rows = summary.for_dataset(task, dataset)
        first = rows[0]
        lines += [f"## {md_escape(dataset)} ({task})", "",
                  f"Models: prompt-tuned `{md_escape(first.prompt.model)}`, finetuned `{md_escape(first.finetune.model)}`; "
                  f"{first.prompt.n} examples per attack.", ""]
        lines += comparison_table(rows) + [""]
        lines += ["Paired comparison on the same examples:", ""] + significance_table(rows) + [""]
        for c in rows:
            lines.append(f"- {md_escape(c.verdict())}")
        lines.append("")
        figure = figures / f"eps-curve-{re.sub(r'[^A-Za-z0-9_-]+', '_', dataset)}.png"
        if plot_eps_curves(rows, figure):
            lines += [f"![robust accuracy vs eps on {md_escape(dataset)}](figures/{figure.name})", ""]
        shown = [g for g in gallery if g["dataset"] == dataset]
        if shown:
            lines += ["Adversarial examples (clean | adversarial | perturbation magnified):", "",
                      "| image | model | attack | question / hypothesis | answer |", "|---|---|---|---|---|"]
            for g in shown:
                text = md_escape(g["text"]) if g["text"] == g["adv_text"] else f"{md_escape(g['text'])} → {md_escape(g['adv_text'])}"
                lines.append(f"| ![](gallery/{g['image']}) | {_label(g['member'])} | {md_escape(g['attack_key'])} | {text} | "
                             f"{md_escape(g['clean_prediction'])} → {md_escape(g['adv_prediction'])} |")
            lines.append("")
    lines += ["## Reproduce", "", "```", str(meta.get("command", "")), "```", "",
              "| setting | value |", "|---|---|"]
    for key in ("seed", "device", "batch_size", "limit", "wall_seconds", "started", "records", "resumed_records"):
        if key in meta:
            lines.append(f"| {key} | {md_escape(meta[key])} |")
    for name, version in sorted(meta.get("versions", {}).items()):
        lines.append(f"| {md_escape(name)} | {md_escape(version)} |")
    lines += ["", "Attack configurations:", ""] + [f"- `{c}`" for c in sorted({c.attack_key for c in summary.comparisons})]
    lines += ["", "Every number above is computed from `records.jsonl` in this folder; `robustmm report` re-renders it.", ""]

    (run_dir / "summary.json").write_text(json.dumps(
        {"meta": meta, "verdicts": {d: summary.task_verdict(t, d) for t, d in summary.datasets()},
         "comparisons": [asdict(c) | {"significant": c.significant, "verdict": c.verdict()} for c in summary.comparisons]},
        indent=2, default=str) + "\n")
    report = run_dir / "report.md"
    tmp = run_dir / f".report.md.tmp{os.getpid()}"
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, report)
    return report
