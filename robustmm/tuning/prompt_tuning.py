"""Prompt tuning: prompts trained on top of a frozen base (which stays bit-identical), optionally
started at the base's own activations of real inputs (Li & Liang 2021)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from robustmm.data import load_dataset
from robustmm.errors import RobustMMError
from robustmm.models import checkpoint as ckpt
from robustmm.models.lexicon import load_tokenizer
from robustmm.models.prompts import PromptConfig, PromptModule
from robustmm.models.unified import UnifiedVLM
from robustmm.tuning.finetuning import downstream, train_set
from robustmm.tuning.loop import ImageCache, forget_progress
from robustmm.tuning.recipe import StageConfig


@torch.no_grad()
def real_activations(model: UnifiedVLM, dataset_name: str, config: PromptConfig, seed: int = 0, n: int = 256) -> dict[str, torch.Tensor]:
    """What the frozen backbone of ``model`` (no prompts) computes at ``config.length`` positions drawn
    from ``n`` training examples: the starting prompts of ``init="activations"``.

    Per place ("encoder": image and text tokens; "decoder": the gold answer's input tokens) the
    positions are drawn at random among the real (unpadded) ones. Returns (P, L*2*D) tensors, each
    row the key and value of one position at every layer (``style="prefix"``), or (P, D) inputs of
    the first layer (``style="prompt"``). The sample and the draw use their own seed (``seed`` +
    1000), so the tuning's own random stream is untouched.
    """
    backbone = model.backbone
    sample = load_dataset(dataset_name, split="train", limit=n, seed=seed + 1000)
    captured: dict[tuple, torch.Tensor] = {}
    hooks = []
    for place, layers in (("encoder", backbone.encoder), ("decoder", backbone.decoder)):
        for i, layer in enumerate(layers):
            if config.style == "prefix":
                attention = layer.attn if place == "encoder" else layer.self_attn
                for j, linear in enumerate((attention.k, attention.v)):
                    hooks.append(linear.register_forward_hook(
                        lambda module, args, output, key=(place, i, j): captured.__setitem__(key, output)))
            elif i == 0:
                hooks.append(layer.register_forward_pre_hook(lambda module, args, key=(place, 0, 0): captured.__setitem__(key, args[0])))
    try:
        examples = sample.examples
        cache = ImageCache([e.image for e in examples], model.image_size, model.device)
        text = model.encode_texts([e.text for e in examples])
        targets = model.target_indices([e.label for e in examples])
        memory, keys, _ = model._encode(model.embed(cache.pixels(cache.rows([e.image for e in examples])), text))
        trie = model._trie_on(memory.device)
        backbone.decode(memory, keys, trie.inputs[targets], None, repeat=1)
    finally:
        for hook in hooks:
            hook.remove()
    generator = torch.Generator().manual_seed(seed + 1000)
    out = {}
    for place, valid, layers in (("encoder", keys, len(backbone.encoder)), ("decoder", trie.valid[targets], len(backbone.decoder))):
        positions = valid.nonzero().cpu()
        pick = positions[torch.randperm(len(positions), generator=generator)[:config.length]]
        if len(pick) < config.length:
            raise RobustMMError(f"{n} training examples hold only {len(pick)} {place} positions, fewer than prompt length {config.length}.")
        parts = [captured[(place, i, j)][pick[:, 0], pick[:, 1]] for i in range(layers) for j in range(2)] \
            if config.style == "prefix" else [captured[(place, 0, 0)][pick[:, 0], pick[:, 1]]]
        out[place] = torch.stack(parts, dim=1).reshape(config.length, -1)  # layer-major, key before value
    return out


def prompt_tune(base: Path, dataset_name: str, out: Path, prompt: PromptConfig, stage: StageConfig, seed: int = 0,
                device: str | torch.device = "cpu") -> dict:
    """Train only prompts on top of the frozen ``base`` (on ``device``) and save them to ``out``."""
    torch.manual_seed(seed)
    backbone, _ = ckpt.load_backbone(base)
    backbone.to(device).eval()  # frozen: no dropout, no state change
    for p in backbone.parameters():
        p.requires_grad_(False)
    c = backbone.config
    prompts = PromptModule(prompt, c.dim, c.encoder_layers, c.decoder_layers).to(device)
    train = train_set(dataset_name, stage, seed)
    model = UnifiedVLM(backbone, load_tokenizer(Path(base) / "vocab.txt"), train.task, train.candidates)
    if prompt.init == "activations":
        prompts.start_at(real_activations(model, dataset_name, prompt, seed))  # the bare backbone's activations
    model.prompts = prompts
    stats = downstream(model, train, list(prompts.parameters()), stage, seed, f"prompt-tune {dataset_name}", out)
    stats["trained_parameters"] = ckpt.count(prompts.parameters())  # with the reparameterisation MLP
    ckpt.save_prompted(model, out, base, dataset_name, {"stage": asdict(stage), "seed": seed, "stats": stats})
    forget_progress(out)
    return stats
