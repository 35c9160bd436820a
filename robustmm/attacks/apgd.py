"""Auto-PGD (APGD) with the cross-entropy or the DLR loss, and its targeted DLR form (APGD-T).

From 'Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks' (Croce & Hein 2020, [https://arxiv.org/abs/2003.01690], code: fra31/auto-attack).
:func:`apgd` computes exactly what ``torchattacks.APGD`` / ``torchattacks.APGDT`` 3.5.1 compute
(tests check equality given the same starting points), with two changes that make an example's
result independent of the batch it is in:

- each run's random start of example b comes from its own seed (``start(run, index)``);
  torchattacks draws the whole batch's starts from the global generator;
- APGD-T's L2 step uses each example's own step size (torchattacks uses the first example's,
  ``step_size[0]``, for the whole batch; fra31/auto-attack uses each example's).

The step size starts at 2·eps, is halved for an example at a checkpoint when its loss oscillated
(fewer than ``rho`` of the last steps improved it) or its best loss did not improve since the last
checkpoint, and the iterate then restarts from its best point; a momentum of 0.25 mixes the last
step in. Only examples still correctly classified are attacked by a further restart (or, for
APGD-T, by the next target class). Where no run misclassifies an example its clean pixels are
returned, as torchattacks and AutoAttack do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np
import torch
from torch import nn

from robustmm.attacks.base import IF_SET, PIXEL_SCALE_LINF, check_finite, register_attack
from robustmm.attacks.image import ClassifierView, Perturbation, PixelAttack, check_norm_eps, eot_gradient, zero_gradients
from robustmm.errors import RobustMMError

Start = Callable[[int, torch.Tensor], torch.Tensor]  # (run number, example indices (n,)) -> draws (n, 3, H, W)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference-of-logits-ratio loss (B,) of logits (B, C >= 3) against labels (B,): scale- and shift-invariant."""
    x_sorted, ind_sorted = logits.sort(dim=1)
    ind = (ind_sorted[:, -1] == y).float()
    return -(logits[np.arange(logits.shape[0]), y] - x_sorted[:, -2] * ind - x_sorted[:, -1] * (1.0 - ind)) / (
        x_sorted[:, -1] - x_sorted[:, -3] + 1e-12)


def dlr_loss_targeted(logits: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR loss (B,) of logits (B, C >= 4), labels and target classes (B,)."""
    x_sorted, _ = logits.sort(dim=1)
    u = np.arange(logits.shape[0])
    return -(logits[u, y] - logits[u, y_target]) / (x_sorted[:, -1] - 0.5 * x_sorted[:, -3] - 0.5 * x_sorted[:, -4] + 1e-12)


def _oscillation(loss_steps: torch.Tensor, j: int, k: int, k3: float) -> np.ndarray:
    """Per example: did at most ``k3`` of the last ``k`` steps increase the loss? (torchattacks' check_oscillation)"""
    x = loss_steps.detach().cpu().numpy()
    t = np.zeros(x.shape[1])
    for counter in range(k):
        t += x[j - counter] > x[j - counter - 1]
    return t <= k * k3 * np.ones(t.shape)


@dataclass
class APGDOutcome:
    """:func:`apgd`'s result: ``pixels`` (B, 3, H, W) in [0, 1] (clean where not broken), ``broken`` (B,) bool,
    ``runs`` (B,) how many single runs each example took part in, ``zero_grad`` (B,) bool: the input gradient
    at the example's first starting point was all zero or not finite."""

    pixels: torch.Tensor
    broken: torch.Tensor
    runs: torch.Tensor
    zero_grad: torch.Tensor


def apgd(view: ClassifierView, clean: torch.Tensor, labels: torch.Tensor, start: Start, *, norm: str, eps: float,
         steps: int, restarts: int = 1, loss: str = "ce", targets: int = 0, eot: int = 1, rho: float = 0.75) -> APGDOutcome:
    """APGD on ``view`` from clean pixels (B, 3, H, W) in [0, 1] and labels (B,).

    ``norm``: ``linf`` or ``l2``; ``loss``: ``ce`` or ``dlr``; ``targets`` > 0: APGD-T, the targeted DLR loss
    towards each of the ``targets`` highest-scoring wrong classes in turn (needs C >= 4); ``eot``: gradients
    averaged over that many forward/backward passes (a model's own randomness); ``start(run, index)``:
    the random draws (uniform in [-1, 1) for L∞, standard normal for L2) of the examples ``index`` in
    run ``run`` (runs are numbered over target classes x restarts).
    """
    b = clean.shape[0]
    x, y = clean.clone(), labels.clone()
    adv = x.clone()
    with torch.no_grad():
        acc = view(x).max(1)[1] == y
    runs = torch.zeros(b, dtype=torch.long)
    zero_grad = torch.zeros(b, dtype=torch.bool)
    seen = torch.zeros(b, dtype=torch.bool)
    plan = [(target, r) for target in (range(2, targets + 2) if targets else [None]) for r in range(restarts)]
    for number, (target, _) in enumerate(plan):
        ind_to_fool = acc.nonzero().squeeze()
        if len(ind_to_fool.shape) == 0:
            ind_to_fool = ind_to_fool.unsqueeze(0)
        if ind_to_fool.numel() == 0:
            continue
        part = view if ind_to_fool.numel() == b else view.subset(ind_to_fool)
        t = start(number, ind_to_fool)
        acc_curr, adv_curr, grad0 = _single_run(part, x[ind_to_fool].clone(), y[ind_to_fool].clone(), t, norm=norm,
                                                eps=eps, steps=steps, loss=loss, target=target, eot=eot, rho=rho)
        where = ind_to_fool.cpu()
        runs[where] += 1
        first = ~seen[where]
        zero_grad[where[first]] = torch.tensor(zero_gradients(grad0), dtype=torch.bool)[first]
        seen[where] = True
        ind_curr = (acc_curr == 0).nonzero().squeeze()
        acc[ind_to_fool[ind_curr]] = 0
        adv[ind_to_fool[ind_curr]] = adv_curr[ind_curr].clone()
    return APGDOutcome(adv, ~acc.cpu(), runs, zero_grad)


def _single_run(view, x, y, t, *, norm, eps, steps, loss, target, eot, rho):
    """One APGD run (torchattacks' ``attack_single_run``) from the draws ``t``; returns (still-correct flags,
    last misclassified point, gradient at the start)."""
    device = x.device
    steps_2, steps_min, size_decr = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    t = t.to(device)
    if norm == "linf":
        x_adv = x.detach() + eps * torch.ones([x.shape[0], 1, 1, 1]).to(device).detach() * t / (
            t.reshape([t.shape[0], -1]).abs().max(dim=1, keepdim=True)[0].reshape([-1, 1, 1, 1]))
    else:
        x_adv = x.detach() + eps * torch.ones([x.shape[0], 1, 1, 1]).to(device).detach() * t / (
            (t ** 2).sum(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-12)
    x_adv = x_adv.clamp(0.0, 1.0)
    x_best = x_adv.clone()
    x_best_adv = x_adv.clone()
    loss_steps = torch.zeros([steps, x.shape[0]])

    if target is not None:
        y_target = view(x).sort(dim=1)[1][:, -target]
        criterion = lambda logits: dlr_loss_targeted(logits, y, y_target)  # noqa: E731
    elif loss == "ce":
        ce = nn.CrossEntropyLoss(reduction="none")
        criterion = lambda logits: ce(logits, y)  # noqa: E731
    else:
        criterion = lambda logits: dlr_loss(logits, y)  # noqa: E731

    x_adv.requires_grad_()
    grad, logits, loss_indiv = eot_gradient(view, x_adv, criterion, eot)
    grad_start = grad.clone()
    grad_best = grad.clone()
    acc = logits.detach().max(1)[1] == y
    loss_best = loss_indiv.detach().clone()

    step_size = eps * torch.ones([x.shape[0], 1, 1, 1]).to(device).detach() * torch.Tensor([2.0]).to(
        device).detach().reshape([1, 1, 1, 1])
    x_adv_old = x_adv.clone()
    k = steps_2 + 0
    u = np.arange(x.shape[0])
    counter3 = 0
    loss_best_last_check = loss_best.clone()
    reduced_last_check = np.zeros(loss_best.shape) == np.zeros(loss_best.shape)

    for i in range(steps):
        with torch.no_grad():
            x_adv = x_adv.detach()
            grad2 = x_adv - x_adv_old
            x_adv_old = x_adv.clone()
            a = 0.75 if i > 0 else 1.0
            if norm == "linf":
                x_adv_1 = x_adv + step_size * torch.sign(grad)
                x_adv_1 = torch.clamp(torch.min(torch.max(x_adv_1, x - eps), x + eps), 0.0, 1.0)
                x_adv_1 = torch.clamp(torch.min(torch.max(x_adv + (x_adv_1 - x_adv) * a + grad2 * (1 - a), x - eps), x + eps),
                                      0.0, 1.0)
            else:
                x_adv_1 = x_adv + step_size * grad / ((grad ** 2).sum(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-12)
                x_adv_1 = torch.clamp(x + (x_adv_1 - x) / (((x_adv_1 - x) ** 2).sum(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-12)
                                      * torch.min(eps * torch.ones(x.shape).to(device).detach(),
                                                  ((x_adv_1 - x) ** 2).sum(dim=(1, 2, 3), keepdim=True).sqrt()), 0.0, 1.0)
                x_adv_1 = x_adv + (x_adv_1 - x_adv) * a + grad2 * (1 - a)
                x_adv_1 = torch.clamp(x + (x_adv_1 - x) / (((x_adv_1 - x) ** 2).sum(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-12)
                                      * torch.min(eps * torch.ones(x.shape).to(device).detach(),
                                                  ((x_adv_1 - x) ** 2).sum(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-12),
                                      0.0, 1.0)
            x_adv = x_adv_1 + 0.0

        x_adv.requires_grad_()
        grad, logits, loss_indiv = eot_gradient(view, x_adv, criterion, eot)

        pred = logits.detach().max(1)[1] == y
        acc = torch.min(acc, pred)
        with torch.no_grad():
            x_best_adv[(pred == 0).nonzero().squeeze()] = x_adv[(pred == 0).nonzero().squeeze()] + 0.0
            y1 = loss_indiv.detach().clone()
            loss_steps[i] = y1.cpu() + 0
            ind = (y1 > loss_best).nonzero().squeeze()
            x_best[ind] = x_adv[ind].clone()
            grad_best[ind] = grad[ind].clone()
            loss_best[ind] = y1[ind] + 0
            counter3 += 1
            if counter3 == k:
                fl_oscillation = _oscillation(loss_steps, i, k, rho)
                fl_reduce_no_impr = (~reduced_last_check) * (loss_best_last_check.cpu().numpy() >= loss_best.cpu().numpy())
                fl_oscillation = ~(~fl_oscillation * ~fl_reduce_no_impr)
                reduced_last_check = np.copy(fl_oscillation)
                loss_best_last_check = loss_best.clone()
                if np.sum(fl_oscillation) > 0:
                    step_size[u[fl_oscillation]] /= 2.0
                    fl_oscillation = np.where(fl_oscillation)
                    x_adv[fl_oscillation] = x_best[fl_oscillation].clone()
                    grad[fl_oscillation] = grad_best[fl_oscillation].clone()
                counter3 = 0
                k = np.maximum(k - size_decr, steps_min)

    return acc, x_best_adv, grad_start


def run_draws(seeds: list[int], number: int, norm: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The raw draws (B, *shape) of run ``number`` for examples with ``seeds``: uniform in [0, 1) for L∞ (what
    torchattacks gets from ``torch.rand``), standard normal for L2 (``torch.randn``); example b's from
    ``derived_seed(seeds[b], "run", number)`` alone."""
    from robustmm.seeding import derived_seed, per_example_normal, per_example_uniform

    chosen = [derived_seed(seed, "run", number) for seed in seeds]
    return per_example_uniform(chosen, shape) if norm == "linf" else per_example_normal(chosen, shape)


def start_draws(seeds: list[int], norm: str, shape: tuple[int, ...]) -> Start:
    """The per-example ``start`` of :func:`apgd`: :func:`run_draws`, as ``2u - 1`` for L∞ (torchattacks' arithmetic)."""

    def start(number: int, index: torch.Tensor) -> torch.Tensor:
        raw = run_draws([seeds[i] for i in index.tolist()], number, norm, shape)
        return 2 * raw - 1 if norm == "linf" else raw

    return start


NORMS = ("linf", "l2")


@dataclass(frozen=True)
class APGDConfig:
    """norm: ``linf`` or ``l2``; eps: budget on the [0, 1] pixel scale (L∞: per pixel, written k/255; L2: of the whole
    image); steps: iterations per run; restarts: runs from fresh random starts (each only on examples still robust);
    eot: gradients averaged per step over the model's own randomness; rho: step-size oscillation threshold;
    subset: attack only a seeded fraction of the examples (:func:`robustmm.seeding.in_subset`)."""

    norm: str = "linf"
    eps: float = field(default=8 / 255, metadata=PIXEL_SCALE_LINF)
    steps: int = 100
    restarts: int = 1
    eot: int = field(default=1, metadata=IF_SET)
    rho: float = field(default=0.75, metadata=IF_SET)
    subset: float = field(default=1.0, metadata=IF_SET)
    attack_name: ClassVar[str] = "apgd-ce"

    def __post_init__(self) -> None:
        check_norm_eps(self.attack_name, self.norm, self.eps)
        for name in ("steps", "restarts", "eot"):
            if getattr(self, name) < 1:
                raise RobustMMError(f"{self.attack_name} {name} must be at least 1, not {getattr(self, name)}.")
        check_finite(self.rho, f"{self.attack_name} rho", 0.0, 1.0, low_open=True)
        check_finite(self.subset, f"{self.attack_name} subset (a fraction of the examples)", 0.0, 1.0, low_open=True)


@register_attack
class APGDCE(PixelAttack):
    r"""APGD-CE: Auto-PGD on the cross-entropy, L∞ or L2 (Croce & Hein 2020, https://arxiv.org/abs/2003.01690).

    From 'Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks'.
    Auto-PGD on the cross-entropy of the candidate scores: ``torchattacks.APGD(loss='ce')``'s computation (see
    :func:`apgd`) with per-example random starts (run r of an example from its seed's stream r).

    Distance Measure : Linf, L2

    Arguments (config):
        norm (str): ``linf`` or ``l2``. (Default: linf)
        eps (float): budget on the [0, 1] scale. (Default: 8/255)
        steps (int): iterations per run. (Default: 100)
        restarts (int): random restarts, each only on examples still robust. (Default: 1)
        eot (int): gradients averaged per step (expectation over the model's randomness). (Default: 1)
        rho (float): step-size oscillation threshold. (Default: 0.75)
        subset (float): attack only this seeded fraction of the examples. (Default: 1)

    Details (``info[i]["details"]``): ``zero_grad`` (the input gradient at the first start was zero or not
    finite; None when the example was not attacked because it was misclassified already), ``runs`` (single
    runs the example took part in). ``queries`` = runs x (steps + 1) x eot.

    Shape:
        - batch.pixels: :math:`(B, 3, H, W)` in [0, 1]; batch.targets: :math:`(B)` candidate indices or -100.
        - result.pixels: :math:`(B, 3, H, W)` in [0, 1] (clean where the attack failed); result.scores: :math:`(B, C)`.

    Examples::
        >>> attack = parse_attack_spec("apgd-ce:eps=8/255,steps=100,restarts=5")
        >>> result = attack.run(model, batch)
    """

    name = "apgd-ce"
    white_box = True
    Config = APGDConfig
    paper = "https://arxiv.org/abs/2003.01690"
    loss = "ce"

    def targets(self, model) -> int:
        """Target classes of APGD-T (0: untargeted)."""
        return 0

    def perturb(self, view, clean, labels, batch):
        c = self.config
        start = start_draws(self.example_seeds(batch), c.norm, tuple(clean.shape[1:]))
        out = apgd(view, clean, labels, start, norm=c.norm, eps=c.eps, steps=c.steps, restarts=c.restarts, loss=self.loss,
                   targets=self.targets(view.model), eot=c.eot, rho=c.rho)
        runs = out.runs.tolist()
        return Perturbation(out.pixels, [n * (c.steps + 1) * c.eot for n in runs],
                            [{"zero_grad": bool(z) if n else None, "runs": n} for z, n in zip(out.zero_grad.tolist(), runs)])


@dataclass(frozen=True)
class APGDDLRConfig(APGDConfig):
    """As APGDConfig, plus targeted: APGD-T, the targeted DLR loss towards each of the ``targets`` highest-scoring
    wrong candidates in turn (AutoAttack's default 9, at most C - 1; needs at least 4 candidates)."""

    targeted: bool = field(default=False, metadata=IF_SET)
    targets: int = 9
    attack_name: ClassVar[str] = "apgd-dlr"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.targets < 1:
            raise RobustMMError(f"apgd-dlr targets must be at least 1, not {self.targets}.")

    def hidden_in_key(self) -> tuple[str, ...]:
        return () if self.targeted else ("targets",)


@register_attack
class APGDDLR(APGDCE):
    r"""APGD-DLR / APGD-T: Auto-PGD on the (targeted) DLR loss (Croce & Hein 2020, https://arxiv.org/abs/2003.01690).

    From 'Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks'.
    Auto-PGD on the difference-of-logits-ratio loss, which is invariant to shifting and rescaling the scores
    (so saturated cross-entropy gradients cannot hide a model): ``torchattacks.APGD(loss='dlr')``; with
    ``targeted=true``, ``torchattacks.APGDT`` (the targeted DLR loss towards each of the ``targets`` best
    wrong candidates in turn; success is still any wrong answer). DLR needs at least 3 candidate answers and
    its targeted form at least 4: SNLI-VE's three labels allow untargeted DLR only.

    Distance Measure : Linf, L2

    Arguments (config):
        norm, eps, steps, restarts, eot, rho, subset: as apgd-ce.
        targeted (bool): APGD-T. (Default: False)
        targets (int): target classes tried by APGD-T, at most C - 1. (Default: 9)

    Details: as apgd-ce (``runs`` counts target classes x restarts).

    Shape:
        - batch.pixels: :math:`(B, 3, H, W)` in [0, 1]; batch.targets: :math:`(B)` candidate indices or -100.
        - result.pixels: :math:`(B, 3, H, W)` in [0, 1] (clean where the attack failed); result.scores: :math:`(B, C)`.

    Examples::
        >>> attack = get_attack("apgd-dlr", eps="8/255", targeted=True)
        >>> result = attack.run(model, batch)
    """

    name = "apgd-dlr"
    white_box = True
    Config = APGDDLRConfig
    loss = "dlr"

    def check_model(self, model) -> None:
        refusal = dlr_refusal(len(model.candidates), self.config.targeted)
        if refusal:
            raise RobustMMError(refusal)

    def targets(self, model) -> int:
        return min(self.config.targets, len(model.candidates) - 1) if self.config.targeted else 0

    def moves_towards_target(self) -> bool:
        return False  # APGD-T aims at target classes it picks itself; its labels stay the gold answers


def dlr_refusal(candidates: int, targeted: bool) -> str | None:
    """Why the (targeted) DLR loss cannot run with this many candidate answers, or None when it can."""
    if candidates < 3:
        return (f"apgd-dlr needs at least 3 candidate answers (the DLR loss divides by the gap between the "
                f"first and third scores); this model has {candidates}.")
    if targeted and candidates < 4:
        return (f"Targeted apgd-dlr (APGD-T) needs at least 4 candidate answers; this model has {candidates} "
                "(e.g. SNLI-VE's entailment / neutral / contradiction): use untargeted apgd-dlr there.")
    return None
