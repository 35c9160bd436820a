"""easy-VE: a visual-entailment set in SNLI-VE's three classes, derived from easy-VQA.

Each easy-VQA image shows one shape (circle / rectangle / triangle) in one colour.
The image's facts are read off its own easy-VQA questions and answers (a "what
colour is the triangle?" -> "blue" row reveals both; "is there not a red shape?"
-> "yes" reveals nothing positive). For every image whose shape and colour are both
revealed, three hypotheses are generated, one per class, from a seeded RNG per image:

- entailment: a plain true description ("there is a blue triangle.", "the picture
  contains a triangle.", ...);
- contradiction: a description template (plain or "neutral"-style, below) with the
  shape, the colour or both replaced by a wrong value, so the sentence is false;
- neutral: a true description plus a claim the image can neither confirm nor deny
  (who drew it, what it is made of, what it stands for: "a child drew the blue
  triangle.", "the blue triangle is a company logo."). As in SNLI-VE, neutral means
  "compatible with the image but not implied by it".

Hypotheses use ordinary English words (not only easy-VQA's 27), so word-substitution
attacks have real synonyms to try. Generated on first use and cached as JSON lines
under ``$ROBUSTMM_HOME/easy-ve/`` (the file is regenerated if deleted).
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict

from robustmm.data import easy_vqa
from robustmm.data.dataset import Dataset, register_dataset
from robustmm.errors import RobustMMError
from robustmm.files import read_json_lines
from robustmm.paths import cache_dir
from robustmm.types import VE_LABELS, Example, Task

VERSION = 1
SHAPES = ("circle", "rectangle", "triangle")
COLORS = ("red", "green", "blue", "black", "gray", "yellow", "teal", "brown")

ENTAILMENT_TEMPLATES = (
    "there is a {color} {shape}.",
    "the image shows a {color} {shape}.",
    "the picture contains a {shape}.",
    "a {shape} is drawn in the picture.",
    "the shape in the picture is {color}.",
    "the image contains something {color}.",
)
NEUTRAL_TEMPLATES = (
    "a child drew the {color} {shape}.",
    "the {color} {shape} is a company logo.",
    "the {shape} was painted yesterday.",
    "someone is looking at the {color} {shape}.",
    "the {color} {shape} is made of wood.",
    "the {shape} was printed on a small card.",
    "an artist sold the picture of the {shape}.",
)


def image_facts(rows: list[tuple[str, str, int]]) -> dict[int, dict[str, str]]:
    """Map image id -> {"shape": ..., "color": ...} for what the questions reveal."""
    facts: dict[int, dict[str, str]] = defaultdict(dict)
    for question, answer, image_id in rows:
        words = question.rstrip("?").split()
        shape = next((w for w in words if w in SHAPES), None)
        color = next((w for w in words if w in COLORS), None)
        if answer in ("yes", "no"):
            negated = "not" in words or "no" in words
            if (answer == "yes") != negated:  # the mentioned attribute is present
                if shape:
                    facts[image_id]["shape"] = shape
                if color:
                    facts[image_id]["color"] = color
            continue
        if answer in SHAPES:
            facts[image_id]["shape"] = answer
            if color:
                facts[image_id]["color"] = color
        elif answer in COLORS:
            facts[image_id]["color"] = answer
            if shape:
                facts[image_id]["shape"] = shape
    return facts


def hypotheses(image_id: int, shape: str, color: str, split: str) -> list[tuple[str, str]]:
    """Three ``(hypothesis, label)`` pairs for one image, one per class, seeded by split and id."""
    rng = random.Random(f"easy-ve/{VERSION}/{split}/{image_id}")
    entail = rng.choice(ENTAILMENT_TEMPLATES).format(color=color, shape=shape)
    neutral = rng.choice(NEUTRAL_TEMPLATES).format(color=color, shape=shape)
    template = rng.choice(ENTAILMENT_TEMPLATES + NEUTRAL_TEMPLATES)
    wrong_shape = rng.choice([s for s in SHAPES if s != shape])
    wrong_color = rng.choice([c for c in COLORS if c != color])
    uses_shape, uses_color = "{shape}" in template, "{color}" in template
    change = rng.choice(["shape", "color", "both"] if uses_shape and uses_color else ["shape" if uses_shape else "color"])
    false = template.format(
        shape=wrong_shape if change in ("shape", "both") else shape,
        color=wrong_color if change in ("color", "both") else color,
    )
    return [(entail, "entailment"), (neutral, "neutral"), (false, "contradiction")]


def generate(split: str) -> list[dict]:
    """All easy-VE rows of a split (deterministic)."""
    facts = image_facts(easy_vqa.read_questions(split))
    rows = []
    for image_id in sorted(facts):
        known = facts[image_id]
        if "shape" not in known or "color" not in known:
            continue
        for text, label in hypotheses(image_id, known["shape"], known["color"], split):
            rows.append({"image_id": image_id, "hypothesis": text, "label": label})
    return rows


def cached_rows(split: str) -> list[dict]:
    """Rows of a split from the cache, generating (atomically) the file first if needed."""
    path = cache_dir("easy-ve") / f"{split}-v{VERSION}.jsonl"
    if not path.exists():
        rows = generate(split)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
        os.replace(tmp, path)
        return rows
    try:
        return read_json_lines(path, "Cached easy-VE file")
    except RobustMMError as err:
        raise RobustMMError(f"{err} Delete {path} to regenerate it.") from err


@register_dataset("easy-ve", "visual entailment derived from easy-VQA images (generated offline); splits train/test")
def load_easy_ve(split: str = "test", **_ignored) -> Dataset:
    if split not in easy_vqa.SPLITS:
        raise RobustMMError(f"easy-ve has splits {', '.join(easy_vqa.SPLITS)}, not {split!r}.")
    examples = tuple(
        Example(
            id=f"easy-ve/{split}/{index}",
            image=easy_vqa.image_path(split, row["image_id"]),
            text=row["hypothesis"],
            answers=(row["label"],),
            task=Task.VE,
            meta={"image_id": row["image_id"]},
        )
        for index, row in enumerate(cached_rows(split))
    )
    return Dataset("easy-ve", split, Task.VE, examples, VE_LABELS)
