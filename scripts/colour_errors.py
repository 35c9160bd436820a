"""How much of the easy-VE members' errors and word substitutions are about colour words.

    python scripts/colour_errors.py [PAIR_DIR=robustmm/checkpoints/default] [RUN_DIR=reports/example]

Prints, per easy-VE member of PAIR_DIR, how many of the *test* contradictions whose only wrong word is
a colour (the shape word, if any, is right) it rejects, and its test errors in all; then, from the
records of RUN_DIR, how many successful `word-sub` attacks per member (both tasks) changed only
colour words. README.md, "Known limitations", quotes these numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

from robustmm.data import easy_vqa, load_dataset
from robustmm.data.easy_ve import COLORS, SHAPES, image_facts
from robustmm.models import checkpoint as ckpt
from robustmm.records import load_run
from robustmm.types import Status
from robustmm.tuning import predictions


def colour_only_contradictions(dataset) -> list[bool]:
    """Per example of easy-VE ``dataset``: a contradiction whose colour word is wrong and whose shape word, if any, is right."""
    facts = image_facts(easy_vqa.read_questions(dataset.split))
    flags = []
    for example in dataset.examples:
        truth = facts[example.meta["image_id"]]
        words = example.text.rstrip(".").split()
        color = next((w for w in words if w in COLORS), None)
        shape = next((w for w in words if w in SHAPES), None)
        flags.append(example.answers[0] == "contradiction" and color not in (None, truth["color"])
                     and shape in (None, truth["shape"]))
    return flags


def colour_only_substitution(text: str, adversarial: str) -> bool:
    """True when every word that differs between ``text`` and ``adversarial`` is a colour word of ``text``."""
    before, after = text.split(), adversarial.split()
    changed = [b for b, a in zip(before, after) if b != a]
    return len(before) == len(after) and bool(changed) and all(w.strip(".?,") in COLORS for w in changed)


def main(pair: Path, run: Path) -> None:
    test = load_dataset("easy-ve", split="test")
    flags = colour_only_contradictions(test)
    total = sum(flags)
    for kind in ("finetune", "prompt"):
        model = ckpt.load_model(pair / "easy-ve" / kind)
        answers = predictions(model, [e.image for e in test.examples], [e.text for e in test.examples])
        rejected = sum(f and a == "contradiction" for f, a in zip(flags, answers))
        errors = sum(a != e.answers[0] for a, e in zip(answers, test.examples))
        print(f"easy-ve/{kind}: rejects {rejected} of {total} colour-only contradictions; "
              f"the other {total - rejected} are {100 * (total - rejected) / errors:.0f}% of its {errors} test errors")
    records = load_run(run)
    for member in ("finetune", "prompt"):
        won = [r for r in records if r.attack == "word-sub" and r.member == member and r.status is Status.SUCCEEDED]
        colour = sum(colour_only_substitution(r.text, r.adv_text) for r in won)
        print(f"{member}: {colour} of {len(won)} successful word substitutions change only colour words")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "robustmm/checkpoints/default"),
         Path(sys.argv[2] if len(sys.argv) > 2 else "reports/example"))
