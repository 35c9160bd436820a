"""Finetuning every backbone parameter of a base on a task (the candidate loss of the gold answer)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from robustmm.data import load_dataset
from robustmm.data.dataset import Dataset
from robustmm.models import checkpoint as ckpt
from robustmm.models.lexicon import load_tokenizer
from robustmm.models.unified import UnifiedVLM
from robustmm.tuning.loop import ImageCache, fit, forget_progress, progress_path
from robustmm.tuning.recipe import StageConfig


def downstream(model: UnifiedVLM, dataset: Dataset, parameters, stage: StageConfig, seed: int, description: str,
                out: Path) -> dict:
    examples = dataset.examples
    cache = ImageCache([e.image for e in examples], model.image_size, model.device)
    rows = cache.rows([e.image for e in examples])
    inputs = model.encode_texts([e.text for e in examples])
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    targets = model.target_indices([e.label for e in examples])

    def loss_fn(index):
        length = int(mask[index].sum(dim=1).max())
        text = {"input_ids": ids[index, :length], "attention_mask": mask[index, :length]}
        return model.loss(cache.pixels(rows[index]), text, targets[index])

    return fit(parameters, loss_fn, len(examples), stage, seed, description, progress_path(out, description))


def train_set(name: str, stage: StageConfig, seed: int) -> Dataset:
    return load_dataset(name, split="train", limit=stage.limit, seed=seed)


def finetune(base: Path, dataset_name: str, out: Path, stage: StageConfig, seed: int = 0,
             device: str | torch.device = "cpu") -> dict:
    """Finetune every backbone parameter of ``base`` on ``dataset_name`` (on ``device``) and save to ``out``."""
    torch.manual_seed(seed)
    backbone, _ = ckpt.load_backbone(base)
    backbone.to(device)
    train = train_set(dataset_name, stage, seed)
    model = UnifiedVLM(backbone.train(), load_tokenizer(Path(base) / "vocab.txt"), train.task, train.candidates)
    stats = downstream(model, train, list(backbone.parameters()), stage, seed, f"finetune {dataset_name}", out)
    stats["trained_parameters"] = ckpt.count(backbone.parameters())
    model.eval()
    ckpt.save_finetuned(model, out, base, dataset_name, {"stage": asdict(stage), "seed": seed, "stats": stats})
    forget_progress(out)
    return stats
