"""M²PT-style multimodal prompts on a frozen VLM (Wang et al., "M²PT: Multimodal Prompt Tuning for Zero-shot
Instruction Learning", EMNLP 2024, https://arxiv.org/abs/2409.15657; code: William-wAng618/M2PT).

- **Visual prompts**: ``visual`` (k, P_v, D_v) learnable tokens in the first ``k`` layers of the vision
  encoder, deep-prompt style as M²PT's CLIP encoder does: before layer 0 the P_v tokens are put in front of
  the patch (and class) tokens; before each later prompted layer 1..k-1 those P_v positions are overwritten
  with that layer's own prompts; after layer k-1 they are removed, so the tokens the projector reads are
  the same in number and order as without prompts. Qwen2-VL's vision tower runs on packed tokens of all
  images: there the P_v prompts go in front of each image's tokens, its attention segments
  (``cu_seqlens``) grow by P_v, and the prompts get no rotation (cos 1, sin 0).
- **Textual prompts**: ``text`` (P_t, D_lm) embeddings in front of the language model's input (what
  PEFT's prompt tuning does), shared with :class:`robustmm.models.vlm.model.GenerativeVLM`'s prompt slot.

The paper also inserts textual prompts at every LLM layer and trains the projector; here (as the issue
asks) textual prompts sit at the input only and everything else is frozen. Saved as ``m2pt.safetensors``
(``visual``, ``text``) with ``m2pt_config.json`` (:class:`M2PTConfig`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from robustmm.errors import RobustMMError

CONFIG_FILE, WEIGHTS_FILE, FORMAT = "m2pt_config.json", "m2pt.safetensors", "robustmm-m2pt-1"


@dataclass(frozen=True)
class M2PTConfig:
    """What an M²PT member is: its base (folder or cached Hub id), family, prompt sizes and how it was trained."""

    base_model_name_or_path: str
    family: str
    visual_tokens: int = 8
    visual_layers: int = 0  # 0: every vision layer before the image features are read
    text_tokens: int = 8
    training: dict = field(default_factory=dict)
    format: str = FORMAT

    def __post_init__(self) -> None:
        if self.visual_tokens < 0 or self.text_tokens < 0 or self.visual_layers < 0 or self.visual_tokens + self.text_tokens == 0:
            raise RobustMMError("M²PT needs visual_tokens, text_tokens and visual_layers >= 0 and at least one prompt token.")


class M2PTPrompts(nn.Module):
    """The learnable prompts: ``visual`` (k, P_v, D_v), ``text`` (P_t, D_lm); see the module docstring.

    ``attach(family)`` registers the hooks that put the visual prompts into the family's vision layers;
    they stay for the life of the model (each loaded member owns its HF model).
    """

    def __init__(self, layers: int, visual_tokens: int, vision_dim: int, text_tokens: int, text_dim: int) -> None:
        super().__init__()
        self.visual = nn.Parameter(torch.zeros(layers if visual_tokens else 0, visual_tokens, vision_dim))
        self.text = nn.Parameter(torch.zeros(text_tokens, text_dim))
        self.handles: list = []

    def initialise(self, word_embeddings: torch.Tensor, generator: torch.Generator) -> None:
        """Visual prompts: Xavier-uniform per layer as M²PT's encoder; textual prompts: embeddings of random vocabulary
        tokens (Lester et al. 2021), so they start on the scale of real token embeddings."""
        with torch.no_grad():
            if self.visual.numel():
                bound = math.sqrt(6.0 / (self.visual.shape[1] * self.visual.shape[2] + self.visual.shape[2]))
                self.visual.copy_((torch.rand(self.visual.shape, generator=generator) * 2 - 1) * bound)
            if self.text.numel():
                rows = torch.randint(0, word_embeddings.shape[0], (self.text.shape[0],), generator=generator)
                self.text.copy_(word_embeddings[rows.to(word_embeddings.device)].float().cpu())

    def attach(self, family) -> None:
        """Hook the visual prompts into the first ``k`` vision layers of ``family`` (see module docstring)."""
        layers = family.vision_layers
        k = self.visual.shape[0]
        if not k:
            return
        if k > family.prompt_layers_limit():
            raise RobustMMError(f"M²PT visual prompts in {k} layers, but the {family.name} vision tower's features are read "
                                f"after layer {family.prompt_layers_limit()}.")
        for i in range(k):
            self.handles.append(layers[i].register_forward_pre_hook(self._packed_pre(i) if family.packed_vision else self._pre(i),
                                                                    with_kwargs=True))
        self.handles.append(layers[k - 1].register_forward_hook(self._packed_post if family.packed_vision else self._post,
                                                                with_kwargs=True))

    # -- (B, N, D) encoders: CLIP, SigLIP, BLIP, Idefics3 -------------------------------------------------
    def _pre(self, i: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            masks = [a for a in list(args[1:]) + [kwargs.get("attention_mask"), kwargs.get("causal_attention_mask")] if isinstance(a, torch.Tensor)]
            if masks:
                raise RobustMMError("M²PT visual prompts need a vision encoder without attention masks (full, unpadded images).")
            prompt = self.visual[i].to(hidden.dtype).unsqueeze(0).expand(hidden.shape[0], -1, -1)
            rest = hidden if i == 0 else hidden[:, prompt.shape[1]:]
            return _replace_hidden(args, kwargs, torch.cat([prompt, rest], dim=1))
        return hook

    def _post(self, module, args, kwargs, output):
        p = self.visual.shape[1]
        if isinstance(output, tuple):
            return (output[0][:, p:],) + tuple(output[1:])
        return output[:, p:]

    # -- Qwen2-VL: packed (N_total, D) tokens with cu_seqlens and rotary position embeddings -------------
    def _packed_pre(self, i: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            cu = kwargs["cu_seqlens"]
            cos, sin = kwargs["position_embeddings"]
            p = self.visual.shape[1]
            prompt = self.visual[i].to(hidden.dtype)
            images = len(cu) - 1
            if i == 0:  # the vision tower's original tokens: put the prompts in front of each image's
                pieces = [hidden[cu[j] : cu[j + 1]] for j in range(images)]
            else:  # tokens already hold the prompts (from layer i-1): take them out, then put this layer's in
                grown = cu + p * torch.arange(images + 1, device=cu.device, dtype=cu.dtype)
                pieces = [hidden[grown[j] + p : grown[j + 1]] for j in range(images)]
            hidden = torch.cat([t for piece in pieces for t in (prompt, piece)])
            ones, zeros = cos.new_ones(p, cos.shape[-1]), sin.new_zeros(p, sin.shape[-1])
            cos = torch.cat([t for j in range(images) for t in (ones, cos[cu[j] : cu[j + 1]])])
            sin = torch.cat([t for j in range(images) for t in (zeros, sin[cu[j] : cu[j + 1]])])
            kwargs = dict(kwargs, cu_seqlens=cu + p * torch.arange(images + 1, device=cu.device, dtype=cu.dtype),
                          position_embeddings=(cos, sin))
            return _replace_hidden(args, kwargs, hidden)
        return hook

    def _packed_post(self, module, args, kwargs, output):
        p, cu = self.visual.shape[1], kwargs["cu_seqlens"]  # the grown segments
        keep = torch.ones(output.shape[0], dtype=torch.bool, device=output.device)
        for j in range(len(cu) - 1):
            keep[cu[j] : cu[j] + p] = False
        return output[keep]


def _replace_hidden(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (hidden,) + tuple(args[1:]), kwargs
    return args, dict(kwargs, hidden_states=hidden)


def save_m2pt(prompts: M2PTPrompts, config: M2PTConfig, folder: str | Path) -> Path:
    """Write ``m2pt.safetensors`` (fp32 ``visual``, ``text``) and ``m2pt_config.json`` into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"visual": prompts.visual.detach().float().cpu().contiguous(), "text": prompts.text.detach().float().cpu().contiguous()},
              str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2, sort_keys=True))
    return folder


def read_m2pt(folder: str | Path) -> tuple[M2PTConfig, dict[str, torch.Tensor]]:
    """The config and fp32 tensors of an M²PT folder (one RobustMMError sentence if malformed)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        data = json.loads((folder / CONFIG_FILE).read_text())
        config = M2PTConfig(**{k: v for k, v in data.items() if k in M2PTConfig.__dataclass_fields__})
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except (OSError, ValueError, TypeError) as err:
        raise RobustMMError(f"{folder} is not a readable M²PT prompt folder ({err}).") from err
    if config.format != FORMAT or set(tensors) != {"visual", "text"}:
        raise RobustMMError(f"{folder} is not an M²PT prompt folder of format {FORMAT}.")
    return config, tensors
