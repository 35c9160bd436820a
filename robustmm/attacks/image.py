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
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import torch
from torch import nn

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
    per_example_norms,
    register_attack,
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

    def perturb(self, view: ClassifierView, clean: torch.Tensor, labels: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """Adversarial pixels (B, 3, H, W) in [0, 1], fp32, from clean pixels, labels (B,) and one seed per
        example (every random draw for example b comes from ``seeds[b]`` alone)."""
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
            adversarial = self.perturb(view, clean, labels, self.example_seeds(batch)).detach().float()
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


def _untargeted(config) -> tuple[str, ...]:
    """``hidden_in_key`` of a targetable config: ``target`` means nothing while ``targeted`` is off."""
    return () if config.targeted else ("target",)


@dataclass(frozen=True)
class FGSMConfig:
    """eps: L∞ budget on the [0, 1] pixel scale; targeted/target: see the module docstring."""

    eps: float = field(default=8 / 255, metadata=PIXEL_SCALE)
    targeted: bool = field(default=False, metadata=IF_SET)
    target: str = "least-likely"

    def __post_init__(self) -> None:
        _check_common("fgsm", self.eps, True, targeted=self.targeted, target=self.target)

    hidden_in_key = _untargeted


@register_attack
class FGSM(PixelAttack):
    r"""FGSM in the paper 'Explaining and Harnessing Adversarial Examples' [https://arxiv.org/abs/1412.6572].

    One signed-gradient step of size ``eps`` on the pixels (via ``torchattacks.FGSM``). No randomness.

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
    threat = "linf"
    Config = FGSMConfig
    paper = "https://arxiv.org/abs/1412.6572"

    def perturb(self, view, clean, labels, seeds):
        import torchattacks

        return _torchattacks_run(torchattacks.FGSM(view, eps=self.config.eps), clean, labels, self.config.targeted)

    def queries(self) -> int:
        return 1


@dataclass(frozen=True)
class PGDConfig:
    """eps: budget on the [0, 1] scale; steps; alpha: step size (default 2.5 * eps / steps);
    random_start: start uniformly inside the ball (drawn per example from the run seed, the attack
    key and the example id); targeted/target: see the module docstring."""

    eps: float = field(default=8 / 255, metadata=PIXEL_SCALE)
    steps: int = 10
    alpha: float | None = field(default=None, metadata=PIXEL_SCALE)
    random_start: bool = True
    targeted: bool = field(default=False, metadata=IF_SET)
    target: str = "least-likely"
    attack_name: ClassVar[str] = "pgd-linf"
    linf: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_common(self.attack_name, self.eps, self.linf, self.steps, self.alpha, self.targeted, self.target)
        if self.alpha is None:
            object.__setattr__(self, "alpha", 2.5 * self.eps / self.steps)

    hidden_in_key = _untargeted


def pgd(view: ClassifierView, clean: torch.Tensor, labels: torch.Tensor, seeds: Sequence[int], *, eps: float, alpha: float,
        steps: int, random_start: bool, linf: bool = True, targeted: bool = False) -> torch.Tensor:
    """PGD exactly as ``torchattacks.PGD`` (L∞) / ``torchattacks.PGDL2`` (L2) 3.5.1 compute it, with two changes
    that make every example's result independent of the batch it is in:

    - the random start of example b is drawn from a generator seeded with ``seeds[b]`` alone (torchattacks
      draws the whole batch from the global generator);
    - the loss is the *sum* of the per-example cross-entropies (torchattacks: the mean), so an example's
      gradient does not scale with the batch size (the L∞ step uses its sign and the L2 step its direction,
      so the iterates are the same).

    clean (B, 3, H, W) in [0, 1], labels (B,) -> adversarial pixels (B, 3, H, W) in [0, 1] within ``eps``
    of ``clean`` (L∞ or L2 over each whole image). ``targeted``: descend the loss of ``labels`` instead.
    """
    from robustmm.seeding import per_example_normal, per_example_uniform

    b = clean.shape[0]
    adversarial = clean.clone().detach()
    if random_start:
        shape = tuple(clean.shape[1:])
        if linf:
            noise = per_example_uniform(seeds, shape, clean.device) * (2 * eps) - eps
            adversarial = torch.clamp(adversarial + noise, 0, 1).detach()
        else:  # torchattacks.PGDL2: a normal direction scaled to a radius drawn uniformly in [0, eps]
            delta = per_example_normal(seeds, shape, clean.device)
            radius = torch.stack([torch.rand(1, generator=_tail_generator(s)) for s in seeds]).to(clean.device)
            norms = delta.view(b, -1).norm(p=2, dim=1).view(b, 1, 1, 1)
            delta = delta * radius.view(b, 1, 1, 1) / norms * eps
            adversarial = torch.clamp(adversarial + delta, 0, 1).detach()
    sign = -1.0 if targeted else 1.0
    for _ in range(steps):
        adversarial.requires_grad_(True)
        loss = sign * nn.functional.cross_entropy(view(adversarial), labels, reduction="sum")
        grad = torch.autograd.grad(loss, adversarial)[0]
        if linf:
            adversarial = adversarial.detach() + alpha * grad.sign()
            delta = torch.clamp(adversarial - clean, -eps, eps)
        else:
            grad_norms = grad.view(b, -1).norm(p=2, dim=1) + 1e-10  # torchattacks' eps_for_division
            adversarial = adversarial.detach() + alpha * grad / grad_norms.view(b, 1, 1, 1)
            delta = adversarial - clean
            factor = torch.min(eps / delta.view(b, -1).norm(p=2, dim=1), torch.ones(b, device=clean.device))
            delta = delta * factor.view(b, 1, 1, 1)
        adversarial = torch.clamp(clean + delta, 0, 1).detach()
    return adversarial


def _tail_generator(seed: int) -> torch.Generator:
    """A second stream of an example's seed (the L2 start radius), independent of its first (the direction)."""
    from robustmm.seeding import generator

    return generator((seed * 6364136223846793005 + 1442695040888963407) & ((1 << 63) - 1))


@register_attack
class PGDLinf(PixelAttack):
    r"""PGD in the paper 'Towards Deep Learning Models Resistant to Adversarial Attacks'
    [https://arxiv.org/abs/1706.06083].

    ``steps`` signed-gradient steps of size ``alpha``, each projected back onto the L∞ ball of
    radius ``eps`` around the clean image and onto [0, 1]: ``torchattacks.PGD``'s computation (see
    :func:`pgd`), with a per-example random start.

    Distance Measure : Linf

    Arguments (config):
        eps (float): maximum perturbation on the [0, 1] scale. (Default: 8/255)
        steps (int): number of steps. (Default: 10)
        alpha (float): step size. (Default: 2.5 * eps / steps, i.e. 2/255 for the defaults)
        random_start (bool): start from a uniform point in the ball. (Default: True)
        targeted (bool), target (str): see FGSM.

    Shape:
        - batch.pixels: :math:`(B, 3, H, W)` in [0, 1]; batch.targets: :math:`(B)` candidate indices or -100.
        - result.pixels: :math:`(B, 3, H, W)` in [0, 1]; result.scores: :math:`(B, C)`.

    Examples::
        >>> attack = parse_attack_spec("pgd-linf:eps=8/255,steps=10")
        >>> result = attack.run(model, batch)
    """

    name = "pgd-linf"
    threat = "linf"
    Config = PGDConfig
    paper = "https://arxiv.org/abs/1706.06083"

    def perturb(self, view, clean, labels, seeds):
        c = self.config
        return pgd(view, clean, labels, seeds, eps=c.eps, alpha=c.alpha, steps=c.steps, random_start=c.random_start,
                   linf=c.linf, targeted=c.targeted)

    def queries(self) -> int:
        return self.config.steps


@dataclass(frozen=True)
class PGDL2Config(PGDConfig):
    """eps: L2 budget of the whole (3, H, W) perturbation on the [0, 1] scale (not a fraction of 255);
    alpha: step size (default 2.5 * eps / steps); other fields as PGDConfig."""

    eps: float = 1.0
    alpha: float | None = None
    attack_name: ClassVar[str] = "pgd-l2"
    linf: ClassVar[bool] = False


@register_attack
class PGDL2(PGDLinf):
    r"""PGD with an L2 budget, from 'Towards Deep Learning Models Resistant to Adversarial Attacks'
    [https://arxiv.org/abs/1706.06083].

    ``steps`` L2-normalised gradient steps of size ``alpha``, each projected onto the L2 ball of
    radius ``eps`` (per example, over all 3·H·W pixels) and onto [0, 1]: ``torchattacks.PGDL2``'s
    computation (see :func:`pgd`), with a per-example random start.

    Distance Measure : L2

    Arguments (config):
        eps (float): maximum L2 norm on the [0, 1] scale. (Default: 1.0)
        steps (int): number of steps. (Default: 10)
        alpha (float): step size. (Default: 2.5 * eps / steps)
        random_start (bool): start from a random point in the ball. (Default: True)
        targeted (bool), target (str): see FGSM.

    Shape:
        - batch.pixels: :math:`(B, 3, H, W)` in [0, 1]; batch.targets: :math:`(B)` candidate indices or -100.
        - result.pixels: :math:`(B, 3, H, W)` in [0, 1]; result.scores: :math:`(B, C)`.

    Examples::
        >>> attack = get_attack("pgd-l2", eps=1.0, steps=20)
        >>> result = attack.run(model, batch)
    """

    name = "pgd-l2"
    threat = "l2"
    Config = PGDL2Config


@dataclass(frozen=True)
class NoiseConfig:
    """eps: half-width of the uniform noise on the [0, 1] scale."""

    eps: float = field(default=8 / 255, metadata=PIXEL_SCALE)

    def __post_init__(self) -> None:
        _check_common("noise-linf", self.eps, True)


@register_attack
class UniformNoise(PixelAttack):
    r"""Uniform random noise in the L∞ ball: a sanity baseline, not an attack (no gradients, no labels).

    Each pixel gets an independent draw from U(-eps, eps) (per example from the run seed, the attack
    key and the example id), then the image is clipped to [0, 1]. Any gradient attack at the same eps
    should hurt accuracy more; if it does not, suspect gradient masking (see AutoAttack's checks,
    [https://arxiv.org/abs/2003.01690]).

    Distance Measure : Linf

    Arguments (config):
        eps (float): noise half-width on the [0, 1] scale. (Default: 8/255)

    Shape:
        - batch.pixels: :math:`(B, 3, H, W)` in [0, 1].
        - result.pixels: :math:`(B, 3, H, W)` in [0, 1]; result.scores: :math:`(B, C)`.

    Examples::
        >>> result = get_attack("noise-linf", eps="8/255").run(model, batch)
    """

    name = "noise-linf"
    threat = "linf"
    Config = NoiseConfig
    paper = "https://arxiv.org/abs/2003.01690"
    needs_labels = False

    def perturb(self, view, clean, labels, seeds):
        from robustmm.seeding import per_example_uniform

        noise = per_example_uniform(seeds, tuple(clean.shape[1:]), clean.device)
        return (clean + (2 * noise - 1) * self.config.eps).clamp(0.0, 1.0)

    def queries(self) -> int:
        return 0


@dataclass(frozen=True)
class BlankConfig:
    """gray: the constant value every pixel is replaced by, in [0, 1]."""

    gray: float = 0.5

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

    def perturb(self, view, clean, labels, seeds):
        return torch.full_like(clean, self.config.gray)

    def queries(self) -> int:
        return 0
