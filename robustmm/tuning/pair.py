"""``make_pair``: the whole recipe (base, then finetuned and prompt-tuned members per dataset), resumable
stage by stage, with the accuracies and parameter counts it writes to ``recipe.json``."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from robustmm.data import load_dataset
from robustmm.models import checkpoint as ckpt
from robustmm.tuning.finetuning import finetune
from robustmm.tuning.loop import accuracy
from robustmm.tuning.pretraining import matching_breakdown, pretrain
from robustmm.tuning.prompt_tuning import prompt_tune
from robustmm.tuning.recipe import Recipe

log = logging.getLogger(__name__)


# The recipe fields that determine the base (the rest only matter to the downstream stages).
PRETRAINING_FIELDS = ("seed", "model", "pretrain", "objectives", "then_objectives", "then_epochs", "match_forms",
                      "match_form_weights", "mismatch_color_share")


def _stage(folder: Path, expected: dict, run: Callable[[], dict]) -> dict:
    """Run a stage unless its checkpoint already exists (then return the stats stored with it).

    An existing checkpoint is reused only if it was made with the settings in ``expected`` (keys of its
    config.json, ``recipe.<field>`` for a base's recipe fields); otherwise one sentence says which differ.
    """
    from robustmm.errors import RobustMMError
    from robustmm.files import read_json

    config = folder / "config.json"
    if not config.is_file():
        return run()
    stored = read_json(config, "Checkpoint config")
    differ = []
    for key, value in expected.items():
        section, _, field = key.partition(".")
        have = (stored.get(section) or {}).get(field) if field else stored.get(section)
        if json.loads(json.dumps(have)) != json.loads(json.dumps(value)):
            differ.append(key)
    if differ:
        raise RobustMMError(f"Stage folder {folder} was made with other settings ({', '.join(differ)} differ); remove it, "
                            "or give tune recipe another --out.")
    log.info("stage %s already done with these settings, skipping", folder)
    return dict(stored.get("stats", {}), reused=True)


def make_pair(recipe: Recipe, out: Path, device: str | torch.device = "cpu") -> dict:
    """Run the whole recipe on ``device``: base, then finetune + prompt-tune for each dataset; write recipe.json.

    Stages whose checkpoint folder already exists are kept (an interrupted recipe resumes).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"recipe": recipe.to_dict(), "device": _describe(device), "stages": {}}
    start = time.perf_counter()
    settings = recipe.to_dict()
    base = {f"recipe.{k}": settings[k] for k in PRETRAINING_FIELDS}
    report["stages"]["pretrain"] = _stage(out / "base", base, lambda: pretrain(recipe, out / "base", device))
    for name in recipe.datasets:
        ft, pt, prompt = recipe.for_dataset(name)
        report["stages"][f"{name}/finetune"] = _stage(
            out / name / "finetune", {"stage": asdict(ft), "seed": recipe.seed},
            lambda: finetune(out / "base", name, out / name / "finetune", ft, recipe.seed, device))
        report["stages"][f"{name}/prompt"] = _stage(
            out / name / "prompt", {"stage": asdict(pt), "seed": recipe.seed, "prompt": prompt.to_dict()},
            lambda: prompt_tune(out / "base", name, out / name / "prompt", prompt, pt, recipe.seed, device))
    report["train_seconds"] = sum(stage.get("seconds", 0.0) for stage in report["stages"].values())
    report["base_matching"] = matching_breakdown(out / "base", device)
    report["base_matching_accuracy"] = report["base_matching"]["overall"]
    report["accuracy"] = documented_accuracy(recipe, out, device)
    report["eval_seconds"] = time.perf_counter() - start - sum(
        stage.get("seconds", 0.0) for stage in report["stages"].values() if not stage.get("reused"))
    (out / "recipe.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _describe(device: str | torch.device) -> str:
    """``cpu (N threads)`` or the CUDA device's name: where a recipe ran, for recipe.json."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"{device.type} ({threads} thread{'s' if threads != 1 else ''})"


def documented_accuracy(recipe: Recipe, out: Path, device: str | torch.device = "cpu") -> dict:
    """Test accuracy (full test split, and a fixed ``check_limit`` subset) and parameter counts of every member."""
    result = {}
    for name in recipe.datasets:
        test = load_dataset(name, split="test", limit=recipe.eval_limit, seed=recipe.seed)
        check = load_dataset(name, split="test", limit=recipe.check_limit, seed=recipe.seed)
        for kind in ("finetune", "prompt"):
            model = ckpt.load_model(out / name / kind, device)
            result[f"{name}/{kind}"] = {
                "test_accuracy": accuracy(model, test), "test_examples": len(test),
                "check_accuracy": accuracy(model, check), "check_examples": len(check), "check_seed": recipe.seed,
                "trainable_parameters": model.info.trainable_parameters, "total_parameters": model.info.total_parameters,
            }
    return result
