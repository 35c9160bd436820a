"""The seed paper's attack: one-step FGSM on the input embeddings of image and text.

Yang et al., "Prompt Tuning for Generative Multimodal Pretrained Models" (arXiv 2208.02532,
https://arxiv.org/abs/2208.02532) compared prompt-tuned and finetuned OFA under a single
FGSM step taken on the *embeddings* the encoder receives, not on pixels or words. Here:

- The embeddings are ``model.embed(pixels, texts)``: image-patch embeddings (B, N, D) and
  text-token embeddings (B, T, D), *before* position and type embeddings are added. For the
  built-in model the image ones are the convolutional stem's output and the text ones the
  projected frozen word vectors. The two scales differ: in the shipped built-in pair the image
  coordinates have an RMS of about 1.4-1.65 and the text ones of 0.20 (base) to 0.29 (finetuned),
  so one absolute eps is a much larger relative change for text than for image (as in the
  paper, which also used a single eps); ``embed-fgsm-rms`` takes the step relative to the RMS.
  ``info["image_rms"]`` / ``info["text_rms"]`` report each example's clean RMS (kept in the
  records) so an eps can be read relative to them.
- ``eps`` is an L∞ bound per embedding coordinate on that raw scale (not the [0, 1] pixel
  scale): every perturbed coordinate moves by exactly ``eps * sign(gradient)`` (0 where the
  gradient is exactly 0).
- Only real text tokens move: padding positions (``attention_mask`` False in
  ``embeddings.context``) are never perturbed. The image embeddings are all perturbed.

The perturbed embeddings cannot be turned back into pixels or words, so the result's pixels
and texts are the clean ones and its scores are the model's scores on the perturbed
embeddings. Labels follow the pixel attacks: gold index, or the clean prediction where the
gold answer is not a candidate (-100); the clean prediction comes from the same forward pass
that gives the gradient, so it costs nothing extra.

Per-example ``info``: ``linf`` and ``l2`` of the whole embedding perturbation (image and
text together), ``image_rms`` and ``text_rms`` (RMS of the clean image coordinates and of the
real-token text coordinates), ``queries`` 1 (one
forward+backward), ``forwards`` 1 (the no-grad pass scoring the perturbed embeddings),
``seconds`` (batch time / B), ``label`` (``gold`` / ``prediction``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustmm.attacks.base import (
    Attack,
    AttackBatch,
    AttackResult,
    Stopwatch,
    attack_mode,
    check_batch,
    check_finite,
    empty_result,
    per_example_norms,
    register_attack,
)
from robustmm.errors import RobustMMError
from robustmm.models.base import Embeddings

logger = logging.getLogger(__name__)

TARGETS = ("image", "text", "both")


@dataclass(frozen=True)
class EmbedFGSMConfig:
    """eps: L∞ step per embedding coordinate (raw embedding scale); target: image, text or both."""

    eps: float = 0.1
    target: str = "both"

    def __post_init__(self) -> None:
        check_finite(self.eps, "embed-fgsm eps")
        if self.target not in TARGETS:
            raise RobustMMError(f"embed-fgsm target must be one of {', '.join(TARGETS)}, not {self.target!r}.")


@dataclass(frozen=True)
class RelativeEmbedFGSMConfig(EmbedFGSMConfig):
    """eps: step per coordinate as a fraction of each example's clean RMS (per modality); target as above."""

    eps: float = 0.25


def _text_mask(context: dict, text: torch.Tensor) -> torch.Tensor:
    """(B, T, 1) float mask of the text positions that may move (1 = real token, 0 = padding)."""
    mask = context.get("attention_mask")
    if mask is None:
        logger.warning("embed-fgsm: the model gives no attention_mask; every text position is perturbed")
        return torch.ones(text.shape[:2] + (1,), device=text.device)
    if tuple(mask.shape) != tuple(text.shape[:2]):
        raise RobustMMError(f"The model's text attention mask has shape {tuple(mask.shape)}, not (B, T) = {tuple(text.shape[:2])}.")
    return mask.to(device=text.device, dtype=torch.float32).unsqueeze(-1)


@register_attack
class EmbeddingFGSM(Attack):
    r"""One-step FGSM on the image and text input embeddings, as in 'Prompt Tuning for Generative
    Multimodal Pretrained Models' [https://arxiv.org/abs/2208.02532] (FGSM from
    [https://arxiv.org/abs/1412.6572]).

    Distance Measure : Linf (per embedding coordinate, raw embedding scale)

    Arguments (config):
        eps (float): step per coordinate. (Default: 0.1, about half the text RMS of the shipped built-in base)
        target (str): which embeddings to perturb: ``image``, ``text`` or ``both``. (Default: both)

    Shape:
        - batch.pixels: :math:`(B, 3, H, W)` in [0, 1]; batch.texts: B strings; batch.targets: :math:`(B)`.
        - embeddings perturbed: image :math:`(B, N, D)`, text :math:`(B, T, D)` (padding untouched).
        - result.pixels / texts: the clean ones; result.scores: :math:`(B, C)` on the perturbed embeddings.

    Examples::
        >>> attack = get_attack("embed-fgsm", eps=0.1, target="both")
        >>> result = attack.run(model, batch)
    """

    name = "embed-fgsm"
    modality = "embedding"
    Config = EmbedFGSMConfig
    paper = "https://arxiv.org/abs/2208.02532"

    def run(self, model, batch: AttackBatch) -> AttackResult:
        check_batch(batch)
        if len(batch) == 0:
            return empty_result(model, batch)
        target, device = self.config.target, model.device
        pixels = batch.pixels.detach().to(device=device, dtype=torch.float32)
        b = pixels.shape[0]
        with attack_mode(model), Stopwatch(device) as clock:
            dtype = next(model.parameters()).dtype
            text_inputs = model.encode_texts(list(batch.texts))
            with torch.no_grad():
                clean = model.embed(pixels.to(dtype), text_inputs)
            # fp32 leaves for the perturbation arithmetic; cast to the model's dtype only to run it.
            image = clean.image.detach().float().requires_grad_(target in ("image", "both"))
            text = clean.text.detach().float().requires_grad_(target in ("text", "both"))
            scores = model.scores_from_embeddings(Embeddings(image.to(dtype), text.to(dtype), clean.context)).float()
            gold = batch.targets.to(device=device, dtype=torch.long)
            missing = gold == -100
            labels = torch.where(missing, scores.detach().argmax(dim=1), gold)
            loss = F.cross_entropy(scores, labels, reduction="sum")
            grads = iter(torch.autograd.grad(loss, [t for t in (image, text) if t.requires_grad]))
            text_mask = _text_mask(clean.context, text)
            image_rms, text_rms = self._rms(image.detach(), text.detach(), text_mask)
            eps_image, eps_text = self.step_sizes(image_rms, text_rms)
            delta_image = eps_image * next(grads).sign() if image.requires_grad else torch.zeros_like(image)
            delta_text = eps_text * next(grads).sign() * text_mask if text.requires_grad else torch.zeros_like(text)
            with torch.no_grad():
                adv_image, adv_text = (image.detach() + delta_image).to(dtype), (text.detach() + delta_text).to(dtype)
                adv_scores = model.scores_from_embeddings(Embeddings(adv_image, adv_text, clean.context)).float()
        delta = torch.cat([delta_image.flatten(1), delta_text.flatten(1)], dim=1)
        linf, l2 = per_example_norms(delta)
        image_rms, text_rms = image_rms.tolist(), text_rms.tolist()
        sources = ["prediction" if m else "gold" for m in missing.tolist()]
        info = [
            {"linf": linf[i], "l2": l2[i], "image_rms": image_rms[i], "text_rms": text_rms[i], "queries": 1, "forwards": 1,
             "seconds": clock.seconds / max(b, 1), "label": sources[i]}
            for i in range(b)
        ]
        return AttackResult(batch.pixels, list(batch.texts), adv_scores.detach(), info)

    def step_sizes(self, image_rms: torch.Tensor, text_rms: torch.Tensor) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """The FGSM step per coordinate for image and text: here ``eps`` for both (raw embedding scale)."""
        return self.config.eps, self.config.eps

    @staticmethod
    def _rms(image: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RMS of each example's clean image coordinates and real-token text coordinates: two (B,) tensors."""
        image_rms = image.pow(2).flatten(1).mean(1).sqrt()
        count = (text_mask.flatten(1).sum(1) * text.shape[-1]).clamp(min=1)
        text_rms = ((text.pow(2) * text_mask).flatten(1).sum(1) / count).sqrt()
        return image_rms, text_rms


@register_attack
class RelativeEmbeddingFGSM(EmbeddingFGSM):
    r"""``embed-fgsm`` with ``eps`` relative to each example's clean embedding RMS, per modality.

    Distance Measure : Linf per coordinate, in units of the example's clean RMS: the image step is
    ``eps * image_rms`` and the text step ``eps * text_rms``.

    Why: one absolute eps (the paper's) is not the same perturbation for two models whose
    embeddings have different scales. Finetuning rescales the text embeddings (in the shipped
    pair their RMS is 0.23 in the finetuned easy-VQA member, 0.14 in the frozen base the
    prompt-tuned member runs on), so an absolute eps perturbs the prompt-tuned member 1.7x more
    in relative terms. A relative eps compares the two at the same signal-to-perturbation ratio.

    Arguments (config):
        eps (float): step per coordinate as a fraction of the clean RMS. (Default: 0.25)
        target (str): ``image``, ``text`` or ``both``. (Default: both)

    Examples::
        >>> attack = get_attack("embed-fgsm-rms", eps=0.25)
    """

    name = "embed-fgsm-rms"
    Config = RelativeEmbedFGSMConfig

    def step_sizes(self, image_rms: torch.Tensor, text_rms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, 1) steps: eps times each example's clean image / text RMS."""
        return self.config.eps * image_rms[:, None, None], self.config.eps * text_rms[:, None, None]
