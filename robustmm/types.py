"""Plain data records that flow between the modules (frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Union

ImageRef = Union[str, Path, Any]  # a path to an image file, or a PIL.Image.Image


class Task(str, Enum):
    """The two downstream tasks robustmm attacks."""

    VQA = "vqa"  # question -> short answer; scored with the official VQA accuracy
    VE = "ve"  # visual entailment (SNLI-VE): hypothesis -> entailment / neutral / contradiction


VE_LABELS = ("entailment", "neutral", "contradiction")


@dataclass(frozen=True)
class Example:
    """One input: an image, a text (VQA question or VE hypothesis) and its gold answers.

    ``answers`` holds every human answer for VQA (10 for VQA v2, 1 for easy-VQA) and
    the single gold label for visual entailment.
    """

    id: str
    image: ImageRef
    text: str
    answers: tuple[str, ...]
    task: Task
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def label(self) -> str:
        """The gold answer used for training and accuracy: the first (VE) or most common (VQA) answer."""
        if self.task is Task.VE or len(self.answers) == 1:
            return self.answers[0]
        counts: dict[str, int] = {}
        for answer in self.answers:
            counts[answer] = counts.get(answer, 0) + 1
        return max(counts, key=lambda a: (counts[a], -self.answers.index(a)))
