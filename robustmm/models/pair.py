"""A prompt-tuned and a finetuned model of the same backbone, loaded and checked together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from robustmm.errors import RobustMMError
from robustmm.models.base import VLModel
from robustmm.paths import package_root
from robustmm.types import Task

DEFAULT_PAIR_DIR = package_root() / "checkpoints" / "default"
DEFAULT_DATASETS = {Task.VQA: "easy-vqa", Task.VE: "easy-ve"}


@dataclass
class ModelPair:
    """Two models that share a backbone, tokenizer, task and answer set."""

    prompt_tuned: VLModel
    finetuned: VLModel

    @property
    def task(self) -> Task:
        return self.prompt_tuned.info.task

    @property
    def candidates(self) -> tuple[str, ...]:
        return self.finetuned.candidates

    def members(self) -> dict[str, VLModel]:
        """``{"prompt": model, "finetune": model}`` in report order."""
        return {"prompt": self.prompt_tuned, "finetune": self.finetuned}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None -> CUDA when present, else CPU; a CUDA request without CUDA is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise RobustMMError(f"Unknown device {device!r}: use auto, cpu or cuda.") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RobustMMError("Device cuda was requested but no CUDA GPU is available.")
    return resolved


def check_pair(prompt_tuned: VLModel, finetuned: VLModel) -> None:
    """Refuse, with one sentence, two models that are not a pair of the same backbone."""
    a, b = prompt_tuned.info, finetuned.info
    if a.tuning != "prompt" or b.tuning != "finetune":
        raise RobustMMError(f"Expected a prompt-tuned and a finetuned model, got {a.tuning!r} ({a.name}) and {b.tuning!r} ({b.name}).")
    if a.family != b.family:
        raise RobustMMError(f"The two models come from different model families ({a.family} vs {b.family}).")
    if a.base != b.base:
        raise RobustMMError(f"The two models have different base checkpoints ({a.base} vs {b.base}).")
    if a.task != b.task:
        raise RobustMMError(f"The two models were tuned for different tasks ({a.task.value} vs {b.task.value}).")
    if prompt_tuned.candidates != finetuned.candidates:
        raise RobustMMError("The two models have different answer sets.")
    if getattr(prompt_tuned, "tokenizer_id", None) != getattr(finetuned, "tokenizer_id", None):
        raise RobustMMError("The two models use different tokenizers.")


def load_member(path: str | Path, device: torch.device) -> VLModel:
    """Load one member: a robustmm checkpoint folder (or, with the HF adapters, a HF/PEFT folder)."""
    from robustmm.models.checkpoint import load_model

    path = Path(path)
    if not path.exists():
        raise RobustMMError(f"Checkpoint {path} does not exist.")
    return load_model(path, device)


def load_pair(
    name: str | None = None,
    *,
    prompt_tuned: str | Path | None = None,
    finetuned: str | Path | None = None,
    task: str | Task = "vqa",
    device: str | torch.device | None = "auto",
) -> ModelPair:
    """Load a checked pair: ``load_pair("default", task="vqa")`` or ``load_pair(prompt_tuned=..., finetuned=...)``."""
    if name is not None:
        if name != "default":
            raise RobustMMError(f"Unknown pair {name!r}: use 'default' or give prompt_tuned= and finetuned= paths.")
        try:
            dataset = DEFAULT_DATASETS[Task(task)]
        except ValueError as err:
            raise RobustMMError(f"Unknown task {task!r}: use vqa or ve.") from err
        prompt_tuned, finetuned = DEFAULT_PAIR_DIR / dataset / "prompt", DEFAULT_PAIR_DIR / dataset / "finetune"
    if prompt_tuned is None or finetuned is None:
        raise RobustMMError("A pair needs both a prompt-tuned and a finetuned checkpoint.")
    target = resolve_device(device)
    pair = ModelPair(load_member(prompt_tuned, target), load_member(finetuned, target))
    check_pair(pair.prompt_tuned, pair.finetuned)
    return pair
