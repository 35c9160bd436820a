"""A prompt-tuned and a finetuned model of the same backbone, loaded and checked together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from robustmm.errors import RobustMMError
from robustmm.files import read_json
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
    if a.base_hash != b.base_hash:
        raise RobustMMError(f"The two models have different base checkpoints ({a.base} vs {b.base}).")
    weights = (a.extra.get("base_weights"), b.extra.get("base_weights"))
    if None not in weights and weights[0] != weights[1]:
        raise RobustMMError(f"The two models sit on different base checkpoints ({a.extra.get('base_model')} and "
                            f"{b.extra.get('base_model')}: base weights {weights[0]} vs {weights[1]}).")
    if a.task != b.task:
        raise RobustMMError(f"The two models were tuned for different tasks ({a.task.value} vs {b.task.value}).")
    if prompt_tuned.candidates != finetuned.candidates:
        raise RobustMMError("The two models have different answer sets.")
    if getattr(prompt_tuned, "tokenizer_id", None) != getattr(finetuned, "tokenizer_id", None):
        raise RobustMMError("The two models use different tokenizers.")


def member_kind(folder: Path) -> str:
    """What a checkpoint folder holds: ``unified`` (robustmm config.json), ``peft`` (adapter_config.json), ``m2pt``
    (M²PT prompts) or ``hf``."""
    from robustmm.models.checkpoint import FORMAT
    from robustmm.models.vlm.m2pt import CONFIG_FILE

    if (folder / CONFIG_FILE).is_file():
        return "m2pt"
    if (folder / "adapter_config.json").is_file():
        return "peft"
    config = folder / "config.json"
    if config.is_file():
        data = read_json(config, "Checkpoint config")
        if isinstance(data, dict) and data.get("format") == FORMAT:
            return "unified"
        if isinstance(data, dict) and "model_type" in data:
            return "hf"
        raise RobustMMError(f"Checkpoint config {config} is neither a robustmm ({FORMAT}) nor a Hugging Face model config.")
    raise RobustMMError(f"Checkpoint folder {folder} holds no config.json or adapter_config.json.")


def load_member(path: str | Path, device: torch.device, *, dtype: str | torch.dtype | None = "float32",
                task: str | Task | None = None, candidates: Sequence[str] | None = None,
                base: str | Path | None = None, vlm: dict | None = None) -> VLModel:
    """Load one member: a robustmm checkpoint folder, a Hugging Face ViLT/BLIP folder or PEFT prompt adapter, or
    a VLM (LLaVA, PaliGemma, Qwen2-VL, Idefics3/SmolVLM, BLIP-2) checkpoint, PEFT adapter or M²PT prompt folder.

    ``path`` may also be a Hub id already in the local HF cache (nothing is downloaded).
    ``dtype``, ``task`` and ``candidates`` apply to the HF models (see ``robustmm.models.hf`` and
    ``robustmm.models.vlm``); a built-in checkpoint carries its own task and candidates and runs in float32.
    ``base`` is the folder of a built-in prompt checkpoint's base when it no longer lies where the checkpoint
    says. ``vlm``: options of VLM members (``image_size``, ``memory_mb``, ``gradient_checkpointing``).
    """
    from robustmm.models.hf import load_hf_member, resolve_dtype, resolve_folder
    from robustmm.models.vlm.members import is_vlm_member, load_vlm_member

    folder = resolve_folder(path)
    kind = member_kind(folder)
    if kind == "unified":
        from robustmm.models.checkpoint import load_model

        if resolve_dtype(dtype, device) is not torch.float32:
            raise RobustMMError("The built-in model runs in float32 only; use dtype float32.")
        model = load_model(folder, device, base=base)
        if candidates is not None and set(candidates) != set(model.candidates):
            raise RobustMMError(f"Checkpoint {folder} was tuned for a different answer set than the candidates given.")
        return model
    if base is not None:
        raise RobustMMError(f"A base folder applies to robustmm prompt checkpoints only; {folder} names its base itself.")
    if is_vlm_member(folder):
        return load_vlm_member(path, device, dtype=dtype, task=task, candidates=candidates, **(vlm or {}))
    if vlm:
        raise RobustMMError(f"VLM options ({', '.join(sorted(vlm))}) apply to VLM members only, not to {folder}.")
    return load_hf_member(path, device, dtype=dtype, task=task, candidates=candidates)


def load_pair(
    name: str | None = None,
    *,
    prompt_tuned: str | Path | None = None,
    finetuned: str | Path | None = None,
    task: str | Task = "vqa",
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "float32",
    candidates: Sequence[str] | None = None,
    base: str | Path | None = None,
    vlm: dict | None = None,
) -> ModelPair:
    """Load a checked pair: ``load_pair("default", task="vqa")`` or ``load_pair(prompt_tuned=..., finetuned=...)``.

    Members may be robustmm checkpoints, HF ViLT/BLIP folders / cached Hub ids, or PEFT prompt
    adapters; ``task``, ``candidates`` (the answer set) and ``dtype`` (float32, or bfloat16 on CUDA)
    apply to the HF members (see :func:`load_member`); ``base`` is the base folder of a built-in
    prompt-tuned checkpoint that was moved away from it (hash-checked); ``vlm``: options of VLM members
    (``image_size``, ``memory_mb``, ``gradient_checkpointing``; see :mod:`robustmm.models.vlm.model`).
    """
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
    options = {"dtype": dtype, "task": task, "candidates": candidates, "vlm": vlm}
    pair = ModelPair(load_member(prompt_tuned, target, base=base, **options), load_member(finetuned, target, **options))
    check_pair(pair.prompt_tuned, pair.finetuned)
    return pair
