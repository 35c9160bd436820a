"""``--answer generate``: each member's open-ended clean answers, scored with the official metric.

Attacks score a closed candidate set; generative VLMs are also judged by what they say unprompted.
For every example and member the greedy open-ended answer is generated once, scored with
:func:`robustmm.metrics.answer_score` (official VQA accuracy, or exact match), and kept as a row of
``generations.jsonl`` in the run folder (appended per batch, resumable like the attack records). The
report shows each member's open-ended clean accuracy beside, not instead of, the candidate-scored one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch

from robustmm.errors import RobustMMError
from robustmm.metrics import answer_score, is_correct


def check_can_generate(pair) -> None:
    """Refuse, in one sentence, a pair with a member that cannot generate open-ended answers."""
    for member, model in pair.members().items():
        if not callable(getattr(model, "generate_answers", None)):
            raise RobustMMError(f"--answer generate needs generative members; {member} member {model.info.name} "
                                f"({model.info.family}) scores a fixed answer set only.")


def read_rows(path: Path) -> list[dict]:
    """The complete rows of ``generations.jsonl`` (a torn last line, from a kill mid-write, is ignored)."""
    from robustmm.files import read_text

    if not path.is_file():
        return []
    text = read_text(path, "Generation file")
    rows = []
    for number, line in enumerate(text[: text.rfind("\n") + 1].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row["dataset"], row["member"], row["example_id"], row["score"]  # noqa: B018 - the keys every row has
        except (ValueError, KeyError, TypeError) as err:
            raise RobustMMError(f"Line {number} of {path} is not a generation row ({err}).") from err
        rows.append(row)
    return rows


@torch.no_grad()
def generate_rows(pair, dataset, images, batch_size: int, path: Path) -> list[dict]:
    """Every member's open-ended answer to every example of ``dataset`` (stored rows reused, missing ones added)."""
    check_can_generate(pair)
    stored = {(r["dataset"], r["member"], r["example_id"]): r for r in read_rows(path)}
    rows = []
    for member, model in pair.members().items():
        todo = [e for e in dataset.examples if (dataset.name, member, e.id) not in stored]
        rows += [stored[(dataset.name, member, e.id)] for e in dataset.examples if (dataset.name, member, e.id) in stored]
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            pixels = images.pixels(chunk, model.image_size).to(model.device)
            answers = model.generate_answers(pixels, [e.text for e in chunk])
            new = [{"dataset": dataset.name, "task": dataset.task.value, "member": member, "model": model.info.name,
                    "example_id": e.id, "answer": a, "score": answer_score(a, e.answers, dataset.task.value)}
                   for e, a in zip(chunk, answers)]
            with open(path, "a", encoding="utf-8") as handle:
                handle.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in new))
                handle.flush()
                os.fsync(handle.fileno())
            rows += new
    return rows


def generation_lines(rows: Sequence[dict], labels: dict[str, str]) -> list[str]:
    """The report's table: per member, open-ended clean accuracy [95% CI] and mean score over its rows."""
    from robustmm.report import percent
    from robustmm.statistics import bootstrap_ci, mean

    lines = ["### Open-ended answers (clean, `--answer generate`)", "",
             "Greedy free generation, scored with the official metric; the tables above score a closed candidate set.", "",
             "| model | examples | accuracy [95% CI] | mean score |", "|---|---|---|---|"]
    for member, label in labels.items():
        mine = [r for r in rows if r["member"] == member]
        if not mine:
            continue
        correct = [float(is_correct(r["score"])) for r in mine]
        low, high = bootstrap_ci(correct)
        lines.append(f"| {label} | {len(mine)} | {percent(mean(correct))} [{percent(low)}, {percent(high)}] | "
                     f"{percent(mean([r['score'] for r in mine]))} |")
    return lines + [""]
