"""Pixel-space attacks: FGSM, PGD-L∞ and PGD-L2 (computed as torchattacks does), a uniform-noise
baseline and the blank image; the shared machinery of every pixel attack (APGD and Square in their
own modules, the worst-case ensemble in ``ensemble.py``).

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

Randomness: an attack's own draws (random starts, noise, Square's proposals) come from each
example's seed (:meth:`Attack.example_seeds`). A model that is random itself in eval mode (e.g.
ViLT's patch sampling) draws from torch's global generator; during an attack that generator is
forked and seeded from the batch's example seeds, so the global state is left alone and a batch
gives the same records every time (but such a model's draws, made for the batch as a whole, are
not batch-size invariant).

Per-example ``info``: ``linf`` and ``l2`` of the pixel perturbation (adversarial minus
clean, [0, 1] scale), ``queries`` (forward+backward passes: FGSM 1, PGD ``steps`` x ``eot``,
noise 0; forward passes for black-box attacks), ``forwards`` (extra no-grad forward passes: 1 to
score the adversarial batch, plus 1 when labels or targets had to be read from the clean
prediction), ``seconds`` (batch wall time / B), ``label`` (``gold`` / ``prediction`` / ``target``)
and ``details``: gradient attacks write ``zero_grad`` (the input gradient at the starting point was
all zero or not finite: a sign of gradient masking); an attack with ``subset`` < 1 writes
``outside_subset: true`` for the examples it left alone (clean pixels, no queries).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterator, Sequence

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
    used as logits. The texts are encoded once here; ``B`` must equal ``len(texts)``
    (:meth:`subset` gives the view of some of the rows). The pixels are cast to the model's
    dtype inside, so attack arithmetic stays fp32 even for a half-precision model. The view's
    ``training`` flag mirrors the model's at construction (torchattacks reads and restores it);
    building a view changes nothing in the model.

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

    def subset(self, index: torch.Tensor | Sequence[int]) -> "ClassifierView":
        """The view of rows ``index`` of this batch (their texts, already encoded)."""
        return ClassifierView(self.model, {name: value[index] for name, value in self.text_inputs.items()})


@dataclass
class Perturbation:
    """What :meth:`PixelAttack.perturb` returns: ``pixels`` (B, 3, H, W) in [0, 1], ``queries`` (B ints:
    forward+backward passes, or forward queries of a black-box attack) and ``details`` (B dicts of
    attack-specific facts, documented by each attack)."""

    pixels: torch.Tensor
    queries: list[int]
    details: list[dict]


def eot_gradient(view: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 criterion: Callable[[torch.Tensor], torch.Tensor], eot: int = 1):
    """Gradient (B, 3, H, W) of ``criterion(view(x)).sum()`` with respect to ``x`` (which requires grad),
    averaged over ``eot`` forward/backward passes (expectation over transformation: the passes differ only
    through the model's own randomness), with the last pass's logits (B, C) and per-example losses (B,)."""
    grad = torch.zeros_like(x)
    for _ in range(eot):
        with torch.enable_grad():
            logits = view(x)
            loss_indiv = criterion(logits)
            loss = loss_indiv.sum()
        grad += torch.autograd.grad(loss, [x])[0].detach()
    grad /= float(eot)
    return grad, logits, loss_indiv


def zero_gradients(grad: torch.Tensor) -> list[bool]:
    """Per example of ``grad`` (B, ...): all zero or not finite (AutoAttack's check_zero_gradients, plus NaN/inf)."""
    flat = grad.detach().flatten(1)
    return ((flat.abs().sum(1) == 0) | ~torch.isfinite(flat).all(1)).tolist()


@contextlib.contextmanager
def model_randomness(seeds: Sequence[int], device: torch.device) -> Iterator[None]:
    """Fork torch's global generator for a block and seed it from the batch's example seeds (a random model's
    own draws are then reproducible for this batch, and the caller's global state is untouched)."""
    from robustmm.seeding import derived_seed

    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derived_seed(0, "model-randomness", *seeds))
        yield


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
    """Shared ``run`` of the pixel attacks; subclasses implement ``perturb``."""

    modality = "image"
    needs_labels = True  # False for attacks that never look at labels (noise)

    def perturb(self, view: ClassifierView, clean: torch.Tensor, labels: torch.Tensor | None,
                batch: AttackBatch) -> Perturbation:
        """The adversarial pixels (fp32, [0, 1]) with per-example queries and details, from the view of ``batch``'s
        texts, its clean pixels (B, 3, H, W) on the model's device and labels (B,). Every random draw for
        example b comes from ``self.example_seeds(batch)[b]`` alone."""
        raise NotImplementedError

    def check_model(self, model) -> None:
        """Refuse, with one sentence, a model this attack cannot run on (nothing by default)."""

    def moves_towards_target(self) -> bool:
        """Whether the labels are target answers (``targeted`` with ``target``) rather than the gold answers."""
        return bool(getattr(self.config, "targeted", False))

    def run(self, model, batch: AttackBatch) -> AttackResult:
        """Attack ``model`` on ``batch``: adversarial pixels (on the batch's device), clean texts, scores (B, C)."""
        check_batch(batch)
        if len(batch) == 0:
            return empty_result(model, batch)
        self.check_model(model)
        config, device = self.config, model.device
        clean = batch.pixels.detach().to(device=device, dtype=torch.float32)
        b = clean.shape[0]
        seeds = self.example_seeds(batch)
        chosen = [i for i, example in enumerate(batch.examples) if self.covers(batch.seed, example.id)]
        adversarial = clean.clone()
        queries, sources, forwards = [0] * b, ["none"] * b, 0
        details: list[dict] = [{"outside_subset": True} for _ in range(b)]
        with attack_mode(model), model_randomness(seeds, device), Stopwatch(device) as clock:
            view = ClassifierView(model, batch.texts)
            if chosen:
                everything = len(chosen) == b
                part = view if everything else view.subset(chosen)
                part_clean = clean if everything else clean[chosen]
                if self.needs_labels:
                    labels, part_sources, forwards = _labels(part, part_clean, batch.targets[chosen], self.moves_towards_target(),
                                                             getattr(config, "target", ""), model.candidates)
                else:
                    labels, part_sources = None, ["none"] * len(chosen)
                part_batch = batch if everything else AttackBatch([batch.examples[i] for i in chosen], batch.pixels[chosen],
                                                                  [batch.texts[i] for i in chosen], batch.targets[chosen], batch.seed)
                out = self.perturb(part, part_clean, labels, part_batch)
                adversarial[chosen] = out.pixels.detach().float()
                for j, i in enumerate(chosen):
                    queries[i], details[i], sources[i] = out.queries[j], out.details[j], part_sources[j]
            with torch.no_grad():
                scores = view(adversarial)
        linf, l2 = per_example_norms(adversarial - clean)
        info = [
            {"linf": linf[i], "l2": l2[i], "queries": queries[i], "forwards": forwards + 1,
             "seconds": clock.seconds / max(b, 1), "label": sources[i], "details": details[i]}
            for i in range(b)
        ]
        return AttackResult(adversarial.to(batch.pixels.device), list(batch.texts), scores.detach(), info)


def check_norm_eps(name: str, norm: str, eps: float) -> None:
    """Refuse an unknown norm, or an eps that is not a finite number >= 0 (at most 1 for L∞)."""
    if norm not in ("linf", "l2"):
        raise RobustMMError(f"{name} norm must be linf or l2, not {norm!r}.")
    _check_common(name, eps, norm == "linf")


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

    One signed-gradient step of size ``eps`` on the pixels, clipped to [0, 1]: ``torchattacks.FGSM``'s
    computation with the per-example cross-entropies summed (its mean scales every gradient by 1/B). No
    randomness. Details: ``zero_grad``.

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
    white_box = True
    threat = "linf"
    Config = FGSMConfig
    paper = "https://arxiv.org/abs/1412.6572"

    def perturb(self, view, clean, labels, batch):
        sign = -1.0 if self.config.targeted else 1.0
        x = clean.clone().requires_grad_(True)
        grad, _, _ = eot_gradient(view, x, lambda logits: sign * nn.functional.cross_entropy(logits, labels, reduction="none"))
        adversarial = torch.clamp(clean + self.config.eps * grad.sign(), 0, 1).detach()
        return Perturbation(adversarial, [1] * len(batch), [{"zero_grad": z} for z in zero_gradients(grad)])


@dataclass(frozen=True)
class PGDConfig:
    """eps: budget on the [0, 1] scale; steps; alpha: step size (default 2.5 * eps / steps);
    random_start: start uniformly inside the ball (drawn per example from the run seed, the attack
    key and the example id); targeted/target: see the module docstring; eot: gradients averaged per
    step over the model's own randomness (expectation over transformation); subset: attack only a
    seeded fraction of the examples (:func:`robustmm.seeding.in_subset`)."""

    eps: float = field(default=8 / 255, metadata=PIXEL_SCALE)
    steps: int = 10
    alpha: float | None = field(default=None, metadata=PIXEL_SCALE)
    random_start: bool = True
    targeted: bool = field(default=False, metadata=IF_SET)
    target: str = "least-likely"
    eot: int = field(default=1, metadata=IF_SET)
    subset: float = field(default=1.0, metadata=IF_SET)
    attack_name: ClassVar[str] = "pgd-linf"
    linf: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_common(self.attack_name, self.eps, self.linf, self.steps, self.alpha, self.targeted, self.target)
        if self.eot < 1:
            raise RobustMMError(f"{self.attack_name} eot must be at least 1, not {self.eot}.")
        check_finite(self.subset, f"{self.attack_name} subset (a fraction of the examples)", 0.0, 1.0, low_open=True)
        if self.alpha is None:
            object.__setattr__(self, "alpha", 2.5 * self.eps / self.steps)

    hidden_in_key = _untargeted


def pgd(view: ClassifierView, clean: torch.Tensor, labels: torch.Tensor, seeds: Sequence[int], *, eps: float, alpha: float,
        steps: int, random_start: bool, linf: bool = True, targeted: bool = False,
        eot: int = 1) -> tuple[torch.Tensor, list[bool]]:
    """PGD exactly as ``torchattacks.PGD`` (L∞) / ``torchattacks.PGDL2`` (L2) 3.5.1 compute it, with two changes
    that make every example's result independent of the batch it is in:

    - the random start of example b is drawn from a generator seeded with ``seeds[b]`` alone (torchattacks
      draws the whole batch from the global generator);
    - the loss is the *sum* of the per-example cross-entropies (torchattacks: the mean), so an example's
      gradient does not scale with the batch size (the L∞ step uses its sign and the L2 step its direction,
      so the iterates are the same).

    clean (B, 3, H, W) in [0, 1], labels (B,) -> adversarial pixels (B, 3, H, W) in [0, 1] within ``eps``
    of ``clean`` (L∞ or L2 over each whole image), and per example whether the first gradient (at the start)
    was zero or not finite. ``targeted``: descend the loss of ``labels`` instead. ``eot``: each step's
    gradient is the mean over that many passes (``torchattacks.EOTPGD`` sums them: the same sign).
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
    zero_grad: list[bool] = []
    for step in range(steps):
        adversarial.requires_grad_(True)
        grad, _, _ = eot_gradient(view, adversarial,
                                  lambda logits: sign * nn.functional.cross_entropy(logits, labels, reduction="none"), eot)
        if step == 0:
            zero_grad = zero_gradients(grad)
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
    return adversarial, zero_grad


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
        eot (int): gradients averaged per step over the model's randomness. (Default: 1)
        subset (float): attack only this seeded fraction of the examples. (Default: 1)

    Details (``info[i]["details"]``): ``zero_grad`` (the gradient at the start was zero or not finite).

    Shape:
        - batch.pixels: :math:`(B, 3, H, W)` in [0, 1]; batch.targets: :math:`(B)` candidate indices or -100.
        - result.pixels: :math:`(B, 3, H, W)` in [0, 1]; result.scores: :math:`(B, C)`.

    Examples::
        >>> attack = parse_attack_spec("pgd-linf:eps=8/255,steps=10")
        >>> result = attack.run(model, batch)
    """

    name = "pgd-linf"
    white_box = True
    threat = "linf"
    Config = PGDConfig
    paper = "https://arxiv.org/abs/1706.06083"

    def perturb(self, view, clean, labels, batch):
        c = self.config
        adversarial, zero_grad = pgd(view, clean, labels, self.example_seeds(batch), eps=c.eps, alpha=c.alpha, steps=c.steps,
                                     random_start=c.random_start, linf=c.linf, targeted=c.targeted, eot=c.eot)
        return Perturbation(adversarial, [c.steps * c.eot] * len(batch), [{"zero_grad": z} for z in zero_grad])


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
        eot (int): gradients averaged per step over the model's randomness. (Default: 1)
        subset (float): attack only this seeded fraction of the examples. (Default: 1)

    Details: as pgd-linf.

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

    def perturb(self, view, clean, labels, batch):
        from robustmm.seeding import per_example_uniform

        noise = per_example_uniform(self.example_seeds(batch), tuple(clean.shape[1:]), clean.device)
        return Perturbation((clean + (2 * noise - 1) * self.config.eps).clamp(0.0, 1.0), [0] * len(batch),
                            [{} for _ in range(len(batch))])


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

    def perturb(self, view, clean, labels, batch):
        return Perturbation(torch.full_like(clean, self.config.gray), [0] * len(batch), [{} for _ in range(len(batch))])
