"""easy-VQA (PyPI ``easy-vqa``): 64x64 images of one coloured shape, 13 answers, bundled offline.

Splits: ``train`` (4,000 images, 38,575 questions) and ``test`` (1,000 images, 9,673 questions).
Questions file rows are ``[question, answer, image_id]``; images are ``images/<id>.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

from robustmm.data.dataset import Dataset, register_dataset
from robustmm.errors import RobustMMError
from robustmm.types import Example, Task

SPLITS = ("train", "test")


def data_root() -> Path:
    """The folder of easy-VQA data inside the installed ``easy_vqa`` package."""
    try:
        import easy_vqa
    except ImportError as err:  # pragma: no cover - a dependency of robustmm
        raise RobustMMError("The easy-vqa package is not installed: run 'pip install easy-vqa==1.0'.") from err
    return Path(easy_vqa.__file__).resolve().parent / "data"


def read_questions(split: str) -> list[tuple[str, str, int]]:
    """Rows ``(question, answer, image_id)`` of one split, validated."""
    if split not in SPLITS:
        raise RobustMMError(f"easy-vqa has splits {', '.join(SPLITS)}, not {split!r}.")
    path = data_root() / split / "questions.json"
    try:
        rows = json.loads(path.read_text())
        return [(str(q), str(a), int(i)) for q, a, i in rows]
    except (OSError, ValueError, TypeError) as err:
        raise RobustMMError(f"{path} is not an easy-VQA questions file ({err}).") from err


def answers() -> tuple[str, ...]:
    """The 13 easy-VQA answers, in the package's order."""
    path = data_root() / "answers.txt"
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def image_path(split: str, image_id: int) -> Path:
    return data_root() / split / "images" / f"{image_id}.png"


@register_dataset("easy-vqa", "easy-VQA shapes and colours (bundled, offline); splits train/test")
def load_easy_vqa(split: str = "test", **_ignored) -> Dataset:
    examples = tuple(
        Example(
            id=f"easy-vqa/{split}/{index}",
            image=image_path(split, image_id),
            text=question,
            answers=(answer,),
            task=Task.VQA,
            meta={"image_id": image_id},
        )
        for index, (question, answer, image_id) in enumerate(read_questions(split))
    )
    return Dataset("easy-vqa", split, Task.VQA, examples, answers())
