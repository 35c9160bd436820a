"""Training M²PT-style prompts on a frozen VLM (``robustmm tune prompt --style m2pt``).

The base (a checkpoint of a supported family: :mod:`robustmm.models.vlm`) stays frozen in eval mode (no
dropout; its weights are bit-identical afterwards); only the visual prompts in its vision encoder and the
textual prompts in front of its language model train (:mod:`robustmm.models.vlm.m2pt`). The objective is the
language-modelling loss of the gold answer: the negative log-likelihood of its tokens and the answer-end
token after the task prompt, as instruction tuning trains, computed with the same prompt and scoring code
the attacks later use. Optimisation is the shared loop (:func:`robustmm.tuning.loop.fit`: AdamW, warm-up,
cosine decay, resumable progress).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from robustmm.errors import RobustMMError
from robustmm.tuning.finetuning import train_set
from robustmm.tuning.loop import ImageCache, fit, forget_progress, progress_path
from robustmm.tuning.recipe import StageConfig


@dataclass(frozen=True)
class M2PTSettings:
    """Prompt sizes: ``visual_tokens`` per prompted vision layer, in the first ``visual_layers`` layers (0: all that
    precede the image features), and ``text_tokens`` in front of the language model's input."""

    visual_tokens: int = 8
    visual_layers: int = 0
    text_tokens: int = 8


# Defaults for `robustmm tune prompt --style m2pt`: one epoch at lr 1e-2 in batches of 8.
DEFAULT_STAGE = StageConfig(epochs=1.0, lr=1e-2, batch_size=8, warmup=0.1)


def m2pt_tune(base: str | Path, dataset_name: str, out: str | Path, settings: M2PTSettings = M2PTSettings(),
              stage: StageConfig = DEFAULT_STAGE, seed: int = 0, device: str | torch.device = "cpu",
              image_size: int | None = None) -> dict:
    """Train M²PT prompts for ``base`` on ``dataset_name``'s training split and save them to ``out``.

    Returns the training facts (steps, final loss, seconds, trained parameters and their share).
    """
    from robustmm.models.vlm.m2pt import M2PTConfig, M2PTPrompts, save_m2pt
    from robustmm.models.vlm.members import is_vlm_member, load_vlm_member
    from robustmm.models.hf import resolve_folder

    folder = resolve_folder(base, "Base model")
    if (folder / "adapter_config.json").is_file() or (folder / "m2pt_config.json").is_file() or not is_vlm_member(folder):
        raise RobustMMError(f"M²PT prompts train on a full checkpoint of a VLM family; {base} is not one.")
    torch.manual_seed(seed)
    train = train_set(dataset_name, stage, seed)
    model = load_vlm_member(base, device, task=train.task, candidates=train.candidates, image_size=image_size)
    family = model.family
    layers = settings.visual_layers or family.prompt_layers_limit()
    prompts = M2PTPrompts(layers, settings.visual_tokens, family.vision_dim, settings.text_tokens,
                          model.model.get_input_embeddings().weight.shape[1])
    prompts.initialise(model.model.get_input_embeddings().weight.detach(), torch.Generator().manual_seed(seed))
    model.attach_m2pt(prompts.to(model.device))
    for p in prompts.parameters():
        p.requires_grad_(True)
    examples = train.examples
    cache = ImageCache([e.image for e in examples], model.image_size, model.device)
    rows = cache.rows([e.image for e in examples])
    texts = [e.text for e in examples]
    targets = model.target_indices([e.label for e in examples])
    if bool((targets < 0).any()):
        raise RobustMMError(f"Some {dataset_name} training answers are not among its candidates.")

    def loss_fn(index: torch.Tensor) -> torch.Tensor:
        chosen = index.tolist()
        text_inputs = model.encode_texts([texts[i] for i in chosen])
        return -model.gold_log_likelihood(cache.pixels(rows[index]), text_inputs, targets[index]).mean()

    description = f"m2pt {dataset_name}"
    parameters = [p for p in prompts.parameters() if p.numel()]
    stats = fit(parameters, loss_fn, len(examples), stage, seed, description, progress_path(Path(out), description))
    trained = sum(p.numel() for p in parameters)
    stats.update({"trained_parameters": trained, "trainable_share": trained / (trained + sum(p.numel() for p in model.model.parameters()))})
    base_name = str(folder.resolve()) if Path(base).exists() else str(base)  # a local folder by absolute path, else the Hub id
    config = M2PTConfig(base_model_name_or_path=base_name, family=family.name, visual_tokens=settings.visual_tokens,
                        visual_layers=int(prompts.visual.shape[0]), text_tokens=settings.text_tokens,
                        training={"dataset": dataset_name, "stage": asdict(stage), "seed": seed, "stats": stats})
    save_m2pt(prompts, config, out)
    forget_progress(Path(out))
    return stats
