"""``joint``: an image+text attack in the spirit of Co-Attack (Zhang et al. 2022, https://arxiv.org/abs/2206.09391)
and SGA (Lu et al. 2023, https://arxiv.org/abs/2307.14061): perturb the text first, then the image given the
perturbed text, so that each modality's perturbation builds on the other's.

Round 1: the label-keeping word substitution (``word-sub``, or ``char-swap``; its protected words, part of
speech and similarity constraints, :mod:`robustmm.attacks.text`) edits the question or hypothesis; then
PGD (L∞, :func:`robustmm.attacks.image.pgd`) attacks the pixels with the model reading the adversarial
text. With ``rounds`` > 1 the two steps alternate on the examples still answered correctly: the text is
attacked again given the adversarial image, then the image again (from the clean image, within the same
ε ball) given the new text. Both budgets hold for the result and are recorded: ``linf`` / ``l2`` of the
pixel perturbation (<= ``eps``) and the words changed (<= ``max_words_fraction`` of the words, the text
attack's own constraint), and ``details`` carries each round's text facts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from robustmm.attacks.base import (
    IF_SET,
    PIXEL_SCALE,
    Attack,
    AttackBatch,
    AttackResult,
    Stopwatch,
    attack_mode,
    check_batch,
    check_finite,
    empty_result,
    get_attack,
    per_example_norms,
    register_attack,
)
from robustmm.errors import RobustMMError

TEXT_ATTACKS = ("word-sub", "char-swap")


@dataclass(frozen=True)
class JointConfig:
    """eps / steps / alpha: the PGD-L∞ image step ([0, 1] scale; alpha default 2.5 eps / steps); text: the text
    attack (word-sub or char-swap, with its default constraints); max_words_fraction: its word budget;
    rounds: text-then-image rounds (1 = text once, then image once); subset: attack only a seeded fraction
    of the examples (:func:`robustmm.seeding.in_subset`)."""

    eps: float = field(default=8 / 255, metadata=PIXEL_SCALE)
    steps: int = 10
    alpha: float | None = field(default=None, metadata=PIXEL_SCALE)
    text: str = "word-sub"
    max_words_fraction: float = 0.2
    rounds: int = 1
    subset: float = field(default=1.0, metadata=IF_SET)

    def __post_init__(self) -> None:
        check_finite(self.subset, "joint subset (a fraction of the examples)", 0.0, 1.0, low_open=True)
        check_finite(self.eps, "joint eps", 0.0, 1.0)
        if self.steps < 1 or self.rounds < 1:
            raise RobustMMError(f"joint steps and rounds must be at least 1, not {self.steps} and {self.rounds}.")
        if self.text not in TEXT_ATTACKS:
            raise RobustMMError(f"joint text must be one of {', '.join(TEXT_ATTACKS)}, not {self.text!r}.")
        if not 0.0 < self.max_words_fraction <= 1.0:
            raise RobustMMError(f"joint max_words_fraction must be in (0, 1], not {self.max_words_fraction}.")
        if self.alpha is None:
            object.__setattr__(self, "alpha", 2.5 * self.eps / self.steps)
        check_finite(self.alpha, "joint alpha (step size)", 0.0, low_open=True)


@register_attack
class Joint(Attack):
    r"""Text then image: label-keeping word substitution, then PGD-L∞ on the pixels given the adversarial text
    (Co-Attack, https://arxiv.org/abs/2206.09391; SGA, https://arxiv.org/abs/2307.14061); ``rounds`` alternate.

    Arguments (config): see :class:`JointConfig`.

    Shape:
        - batch.pixels: :math:`(B, 3, H, W)` in [0, 1]; batch.texts: B strings; batch.targets: :math:`(B)`.
        - result.pixels: :math:`(B, 3, H, W)` within eps (L∞) of the clean ones; result.texts: B adversarial
          texts; result.scores: :math:`(B, C)` on both together.

    Examples::
        >>> result = get_attack("joint", eps="4/255", text="word-sub").run(model, batch)
    """

    name: ClassVar[str] = "joint"
    modality: ClassVar[str] = "joint"
    threat: ClassVar[str] = "linf"
    Config: ClassVar[type] = JointConfig
    paper: ClassVar[str] = "https://arxiv.org/abs/2206.09391"

    def __init__(self, config=None, **params) -> None:
        super().__init__(config, **params)
        self._text = get_attack(self.config.text, max_words_fraction=self.config.max_words_fraction)

    def run(self, model, batch: AttackBatch) -> AttackResult:
        from robustmm.attacks.image import ClassifierView, pgd
        from robustmm.seeding import derived_seed

        check_batch(batch)
        if len(batch) == 0:
            return empty_result(model, batch)
        c, device = self.config, model.device
        clean = batch.pixels.detach().to(device=device, dtype=torch.float32)
        b = clean.shape[0]
        pixels, texts = clean.clone(), list(batch.texts)
        seeds = self.example_seeds(batch)
        labels = batch.targets.to(device=device, dtype=torch.long)
        rounds: list[list[dict]] = [[] for _ in range(b)]
        queries = [0] * b
        active = list(range(b))
        with Stopwatch(device) as clock:
            for number in range(c.rounds):
                sub = AttackBatch([batch.examples[i] for i in active], pixels[active], [texts[i] for i in active],
                                  batch.targets[active], seed=derived_seed(batch.seed, "joint-text", number),
                                  protected=batch.protected)
                text = self._text.run(model, sub)
                for j, i in enumerate(active):
                    texts[i] = text.texts[j]
                    facts = dict(text.info[j])
                    rounds[i].append({"text": facts.get("details", {}) | {"words_changed": facts.get("words_changed")}})
                    queries[i] += int(facts.get("queries", 0))
                with attack_mode(model):
                    view = ClassifierView(model, [texts[i] for i in active])
                    fixed = torch.where(labels[active] == -100, view(clean[active]).argmax(1), labels[active]) \
                        if bool((labels[active] == -100).any()) else labels[active]
                    step_seeds = [derived_seed(seeds[i], "joint-image", number) for i in active]
                    adversarial, _ = pgd(view, clean[active], fixed, step_seeds, eps=c.eps, alpha=c.alpha, steps=c.steps,
                                         random_start=True)
                    pixels[active] = adversarial.detach()
                    with torch.no_grad():
                        right = view(pixels[active]).argmax(1) == fixed
                for i in active:
                    queries[i] += c.steps
                active = [i for i, ok in zip(active, right.tolist()) if ok]
                if not active:
                    break
            with torch.no_grad(), attack_mode(model):
                scores = ClassifierView(model, texts)(pixels).detach()
        linf, l2 = per_example_norms(pixels - clean)
        budget = [math.ceil(c.max_words_fraction * len(str(t).split())) for t in batch.texts]
        info = []
        for i in range(b):
            changed = _words_changed(batch.texts[i], texts[i])
            if linf[i] > c.eps + 1e-6 or changed > budget[i]:
                raise RobustMMError(f"joint broke its own budget on {batch.examples[i].id} (L∞ {linf[i]:.4g}, {changed} words).")
            info.append({"linf": linf[i], "l2": l2[i], "words_changed": changed, "words_total": len(batch.texts[i].split()),
                         "queries": queries[i], "seconds": clock.seconds / b, "details": {"rounds": rounds[i]}})
        return AttackResult(pixels.to(batch.pixels.device), texts, scores, info)


def _words_changed(original: str, adversarial: str) -> int:
    """Words that differ position by position (substitutions keep the word count)."""
    a, b = original.split(), adversarial.split()
    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))
