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


class Status(str, Enum):
    """Outcome of attacking one example (TextAttack's result kinds)."""

    SUCCEEDED = "succeeded"  # clean prediction right, adversarial prediction changed to a wrong one
    FAILED = "failed"  # clean prediction right and still right after the attack
    SKIPPED = "skipped"  # clean prediction already wrong: not attacked


@dataclass(frozen=True)
class AttackRecord:
    """One row per (model, attack, eps, example); every report number is computed from these.

    Scores are per-example answer scores in [0, 1] (official VQA accuracy or exact match).
    Perturbation measures are None where they do not apply to the attack's modality.
    """

    run: str  # run name
    task: str  # "vqa" / "ve"
    dataset: str
    member: str  # "prompt" or "finetune"
    model: str  # model name
    attack: str  # attack name, e.g. "pgd-linf"
    attack_key: str  # attack name + full config, e.g. "pgd-linf(eps=0.0313, steps=10, ...)"
    modality: str
    eps: float | None
    example_id: str
    answers: tuple[str, ...]
    text: str
    adv_text: str
    clean_prediction: str
    adv_prediction: str
    clean_score: float
    adv_score: float
    status: Status
    linf: float | None = None
    l2: float | None = None
    words_changed: int | None = None
    words_total: int | None = None
    similarity: float | None = None
    unknown_substitutions: int | None = None
    image_rms: float | None = None  # embedding attacks: RMS of the clean image / text embeddings
    text_rms: float | None = None
    queries: int = 0
    seconds: float = 0.0
    # Attack-specific facts as JSON values (keys documented by each attack), e.g. a text attack's
    # substitutions and protected-word hits; {} when there are none.
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        from dataclasses import asdict

        row = asdict(self)
        row["status"] = self.status.value
        row["answers"] = list(self.answers)
        return row

    @classmethod
    def from_json(cls, row: dict) -> "AttackRecord":
        row = dict(row)
        row["status"] = Status(row["status"])
        row["answers"] = tuple(row["answers"])
        row.setdefault("details", {})
        return cls(**row)

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identity of a record: (task+dataset, member, attack_key, example_id)."""
        return (f"{self.task}/{self.dataset}", self.member, self.attack_key, self.example_id)
