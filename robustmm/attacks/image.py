"""Pixel-space attacks: FGSM, PGD-L∞ and PGD-L2 through torchattacks, and a uniform-noise baseline.

torchattacks wants an ordinary classifier ``f(x) -> logits``. :class:`ClassifierView`
is that classifier for one batch: a VLModel with the texts held fixed (tokenised once),
taking pixels (B, 3, H, W) in [0, 1] and returning candidate log-likelihoods (B, C) as
logits. The model's own normalisation stays inside the model, so every ``eps`` here is
on the [0, 1] pixel scale (``8/255`` is the usual L∞ budget).

Labels: the attack moves away from ``batch.targets`` (gold candidate indices). An
example whose gold answer is not a candidate (target -100) is attacked away from the
model's clean prediction instead (``info["label"] == "prediction"``), as torchattacks
does when no label is given. With ``targeted=true`` the attack moves *towards*
``target``: a candidate answer, or ``least-likely`` (the lowest-scoring candidate on the
clean input).

Per-example ``info``: ``linf`` and ``l2`` of the pixel perturbation (adversarial minus
clean, [0, 1] scale), ``queries`` (forward+backward passes: FGSM 1, PGD ``steps``, noise 0),
``forwards`` (extra no-grad forward passes: 1 to score the adversarial batch, plus 1 when
labels or targets had to be read from the clean prediction), ``seconds`` (batch wall time / B)
and ``label`` (``gold`` / ``prediction`` / ``target``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
from torch import nn

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
    seeded,
)
from robustmm.errors import RobustMMError

logger = logging.getLogger(__name__)

IGNORE = -100  # target index of a gold answer outside the candidate set (see VLModel.target_indices)


class ClassifierView(nn.Module):
    """A VLModel seen as a plain classifier for a fixed batch of texts.

    ``forward(pixels)``: pixels (B, 3, H, W) float in [0, 1] -> candidate scores (B, C) float32,
    used as logits. The texts are encoded once here; ``B`` must equal ``len(texts)``. The
    pixels are cast to the model's dtype inside, so attack arithmetic stays fp32 even for a
    half-precision model. The view's ``training`` flag mirrors the model's at construction
    (torchattacks reads and restores it); building a view changes nothing in the model.

    Examples::
        >>> view = ClassifierView(model, ["what shape is it?"] * 4)
        >>> logits = view(pixels)            # (4, C)
        >>> adv = torchattacks.PGD(view, eps=8/255)(pixels, labels)
    """

    def __init__(self, model, texts: Sequence[str] | dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.text_inputs = texts if isinstance(texts, dict) else model.encode_texts(list(texts))
        self.dtype = next(model.parameters()).dtype
        self.training = model.training

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.candidate_scores(pixels.to(self.dtype), self.text_inputs).float()


def _labels(view: ClassifierView, clean: torch.Tensor, targets: torch.Tensor, targeted: bool, target: str,
            candidates: Sequence[str]) -> tuple[torch.Tensor, list[str], int]:
    """Labels for torchattacks (B,) on clean's device, where each came from, and no-grad forwards used.

    Untargeted: the gold index, or the clean prediction where it is -100. Targeted: the
    named candidate, or the least-likely candidate on the clean input.
    """
    targets = targets.to(device=clean.device, dtype=torch.long)
    b = clean.shape[0]
    if targeted and target != "least-likely":
        if target not in candidates:
            raise RobustMMError(f"Target answer {target!r} is not one of the model's {len(candidates)} candidate answers.")
        return torch.full((b,), candidates.index(target), dtype=torch.long, device=clean.device), ["target"] * b, 0
    missing = targets == IGNORE
    if not targeted and not bool(missing.any()):
        return targets, ["gold"] * b, 0
    with torch.no_grad():
        scores = view(clean)
    if targeted:
        return scores.argmin(dim=1), ["target"] * b, 1
    logger.debug("%d of %d examples have no gold candidate; attacking their clean prediction", int(missing.sum()), b)
    labels = torch.where(missing, scores.argmax(dim=1), targets)
    return labels, ["prediction" if m else "gold" for m in missing.tolist()], 1


class PixelAttack(Attack):
    """Shared ``run`` of the pixel attacks; subclasses implement ``perturb`` and ``queries``."""

    modality = "image"
    needs_labels = True  # False for attacks that never look at labels (noise)

    def perturb(self, view: ClassifierView, clean: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Adversarial pixels (B, 3, H, W) in [0, 1], fp32, from clean pixels and labels (B,)."""
        raise NotImplementedError

    def queries(self) -> int:
        """Forward+backward passes per example."""
        raise NotImplementedError

    def run(self, model, batch: AttackBatch) -> AttackResult:
        """Attack ``model`` on ``batch``: adversarial pixels (on the batch's device), clean texts, scores (B, C)."""
        check_batch(batch)
        if len(batch) == 0:
            return empty_result(model, batch)
        config, device = self.config, model.device
        clean = batch.pixels.detach().to(device=device, dtype=torch.float32)
        b = clean.shape[0]
        with attack_mode(model), Stopwatch(device) as clock:
            view = ClassifierView(model, batch.texts)
            if self.needs_labels:
                labels, sources, forwards = _labels(view, clean, batch.targets, getattr(config, "targeted", False),
                                                    getattr(config, "target", ""), model.candidates)
            else:
                labels, sources, forwards = None, ["none"] * b, 0
            with seeded(config.seed, device):
                adversarial = self.perturb(view, clean, labels).detach().float()
            with torch.no_grad():
                scores = view(adversarial)
        linf, l2 = per_example_norms(adversarial - clean)
        info = [
            {"linf": linf[i], "l2": l2[i], "queries": self.queries(), "forwards": forwards + 1,
             "seconds": clock.seconds / max(b, 1), "label": sources[i]}
            for i in range(b)
        ]
        return AttackResult(adversarial.to(batch.pixels.device), list(batch.texts), scores.detach(), info)


def _torchattacks_run(attack, clean: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Call a configured torchattacks attack (targeted mode set quietly when asked)."""
    if targeted:
        attack.set_mode_targeted_by_label(quiet=True)
    return attack(clean, labels)


def _check_common(name: str, eps: float, linf: bool, steps: int | None = None, alpha: float | None = None,
                  targeted: bool = False, target: str = "") -> None:
    if linf and eps > 1:
        raise RobustMMError(f"{name} eps is on the [0, 1] pixel scale and must be at most 1, not {eps:g} (did you mean {eps:g}/255?).")
    check_finite(eps, f"{name} eps")
    if steps is not None and steps < 1:
        raise RobustMMError(f"{name} steps must be at least 1, not {steps}.")
    if alpha is not None:
        check_finite(alpha, f"{name} alpha (step size)", 0.0, low_open=True)
    if targeted and not target:
        raise RobustMMError(f"{name} is targeted but no target is given: use target=least-likely or a candidate answer.")


@dataclass(frozen=True)
class FGSMConfig:
    """eps: L∞ budget on the [0, 1] pixel scale; targeted/target: see the module docstring; seed: unused (no randomness)."""

    eps: float = 8 / 255
    targeted: bool = False
    target: str = "least-likely"
    seed: int = 0

    def __post_init__(self) -> None:
        _check_common("fgsm", self.eps, True, targeted=self.targeted, target=self.target)


@register_attack
class FGSM(PixelAttack):
    r"""FGSM in the paper 'Explaining and Harnessing Adversarial Examples' [https://arxiv.org/abs/1412.6572].

    One signed-gradient step of size ``eps`` on the pixels (via ``torchattacks.FGSM``).

    Distance Measure : Linf

    Arguments (config):
        eps (float): maximum perturbation on the [0, 1] scale. (Default: 8/255)
        targeted (bool): move towards ``target`` instead of away from the gold answer. (Default: False)
        target (str): ``least-likely`` or a candidate answer. (Default: least-likely)

    Shape:
        - batch.pixels: :math:`(B, 3, H, W)` in [0, 1]; batch.targets: :math:`(B)` candidate indices or -100.
        - result.pixels: :math:`(B, 3, H, W)` in [0, 1]; result.scores: :math:`(B, C)`.

    Examples::
        >>> attack = get_attack("fgsm", eps="8/255")
        >>> result = attack.run(model, batch)
    """

    name = "fgsm"
    Config = FGSMConfig
    paper = "https://arxiv.org/abs/1412.6572"

    def perturb(self, view, clean, labels):
        import torchattacks

        return _torchattacks_run(torchattacks.FGSM(view, eps=self.config.eps), clean, labels, self.config.targeted)

    def queries(self) -> int:
        return 1


@dataclass(frozen=True)
class PGDConfig:
    """eps: budget on the [0, 1] scale; steps; alpha: step size (default 2.5 * eps / steps);
    random_start: start uniformly inside the ball; targeted/target: see the module docstring;
    seed: of the random start."""

    eps: float = 8 / 255
    steps: int = 10
    alpha: float | None = None
    random_start: bool = True
    targeted: bool = False
    target: str = "least-likely"
    seed: int = 0
    attack_name: ClassVar[str] = "pgd-linf"
    linf: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_common(self.attack_name, self.eps, self.linf, self.steps, self.alpha, self.targeted, self.target)
        if self.alpha is None:
            object.__setattr__(self, "alpha", 2.5 * self.eps / self.steps)


@register_attack
class PGDLinf(PixelAttack):
    r"""PGD in the paper 'Towards Deep Learning Models Resistant to Adversarial Attacks'
    [https://arxiv.org/abs/1706.06083].

    ``steps`` signed-gradient steps of size ``alpha``, each projected back onto the L∞ ball of
    radius ``eps`` around the clean image and onto [0, 1] (via ``torchattacks.PGD``).

    Distance Measure : Linf

    Arguments (config):
        eps (float): maximum perturbation on the [0, 1] scale. (Default: 8/255)
        steps (int): number of steps. (Default: 10)
        alpha (float): step size. (Default: 2.5 * eps / steps, i.e. 2/255 for the defaults)
        random_start (bool): start from a uniform point in the ball. (Default: True)
        targeted (bool), target (str): see FGSM. seed (int): of the random start. (Default: 0)

    Shape:
        - batch.pixels: :math:`(B, 3, H, W)` in [0, 1]; batch.targets: :math:`(B)` candidate indices or -100.
        - result.pixels: :math:`(B, 3, H, W)` in [0, 1]; result.scores: :math:`(B, C)`.

    Examples::
        >>> attack = parse_attack_spec("pgd-linf:eps=8/255,steps=10")
        >>> result = attack.run(model, batch)
    """

    name = "pgd-linf"
    Config = PGDConfig
    paper = "https://arxiv.org/abs/1706.06083"
    torchattacks_class = "PGD"

    def perturb(self, view, clean, labels):
        import torchattacks

        c = self.config
        attack = getattr(torchattacks, self.torchattacks_class)(view, eps=c.eps, alpha=c.alpha, steps=c.steps,
                                                                random_start=c.random_start)
        return _torchattacks_run(attack, clean, labels, c.targeted)

    def queries(self) -> int:
        return self.config.steps


@dataclass(frozen=True)
class PGDL2Config(PGDConfig):
    """eps: L2 budget of the whole (3, H, W) perturbation on the [0, 1] scale; other fields as PGDConfig."""

    eps: float = 1.0
    attack_name: ClassVar[str] = "pgd-l2"
    linf: ClassVar[bool] = False


@register_attack
class PGDL2(PGDLinf):
    r"""PGD with an L2 budget, from 'Towards Deep Learning Models Resistant to Adversarial Attacks'
    [https://arxiv.org/abs/1706.06083].

    ``steps`` L2-normalised gradient steps of size ``alpha``, each projected onto the L2 ball of
    radius ``eps`` (per example, over all 3·H·W pixels) and onto [0, 1] (via ``torchattacks.PGDL2``).

    Distance Measure : L2

    Arguments (config):
        eps (float): maximum L2 norm on the [0, 1] scale. (Default: 1.0)
        steps (int): number of steps. (Default: 10)
        alpha (float): step size. (Default: 2.5 * eps / steps)
        random_start (bool): start from a random point in the ball. (Default: True)
        targeted (bool), target (str): see FGSM. seed (int): of the random start. (Default: 0)

    Shape:
        - batch.pixels: :math:`(B, 3, H, W)` in [0, 1]; batch.targets: :math:`(B)` candidate indices or -100.
        - result.pixels: :math:`(B, 3, H, W)` in [0, 1]; result.scores: :math:`(B, C)`.

    Examples::
        >>> attack = get_attack("pgd-l2", eps=1.0, steps=20)
        >>> result = attack.run(model, batch)
    """

    name = "pgd-l2"
    Config = PGDL2Config
    torchattacks_class = "PGDL2"


@dataclass(frozen=True)
class NoiseConfig:
    """eps: half-width of the uniform noise on the [0, 1] scale; seed: of the noise."""

    eps: float = 8 / 255
    seed: int = 0

    def __post_init__(self) -> None:
        _check_common("noise-linf", self.eps, True)


@register_attack
class UniformNoise(PixelAttack):
    r"""Uniform random noise in the L∞ ball: a sanity baseline, not an attack (no gradients, no labels).

    Each pixel gets an independent draw from U(-eps, eps), then the image is clipped to [0, 1].
    Any gradient attack at the same eps should hurt accuracy more; if it does not, suspect
    gradient masking (see AutoAttack's checks, [https://arxiv.org/abs/2003.01690]).

    Distance Measure : Linf

    Arguments (config):
        eps (float): noise half-width on the [0, 1] scale. (Default: 8/255)
        seed (int): seed of the noise. (Default: 0)

    Shape:
        - batch.pixels: :math:`(B, 3, H, W)` in [0, 1].
        - result.pixels: :math:`(B, 3, H, W)` in [0, 1]; result.scores: :math:`(B, C)`.

    Examples::
        >>> result = get_attack("noise-linf", eps="8/255").run(model, batch)
    """

    name = "noise-linf"
    Config = NoiseConfig
    paper = "https://arxiv.org/abs/2003.01690"
    needs_labels = False

    def perturb(self, view, clean, labels):
        generator = torch.Generator(device=clean.device).manual_seed(self.config.seed)
        noise = torch.rand(clean.shape, generator=generator, device=clean.device, dtype=torch.float32)
        return (clean + (2 * noise - 1) * self.config.eps).clamp(0.0, 1.0)

    def queries(self) -> int:
        return 0


@dataclass(frozen=True)
class BlankConfig:
    """gray: the constant value every pixel is replaced by, in [0, 1]; seed: unused (no randomness)."""

    gray: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        check_finite(self.gray, "blank-image gray (a pixel value)", 0.0, 1.0)


@register_attack
class BlankImage(PixelAttack):
    r"""Replaces the image by a uniform gray one: the blind baseline, not a norm-bounded attack.

    Its "robust accuracy" is what the model scores from the text alone (on easy-VQA many
    yes/no questions can be guessed without the image), the floor that image attacks
    approach; a large gap between clean and blank accuracy shows the model uses the image.

    Arguments (config):
        gray (float): the constant pixel value. (Default: 0.5)

    Shape:
        - batch.pixels: :math:`(B, 3, H, W)` in [0, 1].
        - result.pixels: :math:`(B, 3, H, W)` all equal to ``gray``; result.scores: :math:`(B, C)`.

    Examples::
        >>> result = get_attack("blank-image").run(model, batch)
    """

    name = "blank-image"
    Config = BlankConfig
    needs_labels = False

    def perturb(self, view, clean, labels):
        return torch.full_like(clean, self.config.gray)

    def queries(self) -> int:
        return 0
