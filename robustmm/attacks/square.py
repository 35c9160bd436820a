"""Square Attack: a score-based black-box attack by random search over square-shaped updates.

From 'Square Attack: a query-efficient black-box adversarial attack via random search'
(Andriushchenko et al. 2020, [https://arxiv.org/abs/1912.00049], code: max-andr/square-attack and
fra31/auto-attack). :func:`square` computes ``torchattacks.Square`` 3.5.1's update (margin loss, the
``p`` schedule rescaled to the query budget, accept a proposal when it lowers the loss or misclassifies)
with one change: every random choice (the initial stripes, each proposal's window position, its signs and,
for L2, its orientation) is drawn per example from that example's seed, as the original attack draws a
window per image (torchattacks and AutoAttack draw one window for the whole batch). Example b's draws
at iteration i are fixed in advance, so its search does not depend on the rest of the batch.

Only the model's scores are used: every call runs under ``torch.no_grad()`` and nothing is
differentiated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from robustmm.attacks.base import IF_SET, PIXEL_SCALE_LINF, check_finite, register_attack
from robustmm.attacks.image import ClassifierView, Perturbation, PixelAttack, check_norm_eps
from robustmm.errors import RobustMMError


def p_selection(p_init: float, it: int, n_queries: int) -> float:
    """The fraction of pixels a proposal changes at iteration ``it``: halved at fixed points of a 10,000-query
    schedule rescaled to ``n_queries`` (torchattacks' ``p_selection`` with ``resc_schedule=True``)."""
    it = int(it / n_queries * 10000)
    for limit, divisor in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256)):
        if it <= limit:
            return p_init / divisor
    return p_init / 512


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Score of the label minus the best other score (B,): > 0 while the example is classified correctly."""
    u = torch.arange(logits.shape[0], device=logits.device)
    correct = logits[u, y].clone()
    others = logits.clone()
    others[u, y] = -float("inf")
    return correct - others.max(dim=-1)[0]


def _eta_rectangles(x: int, y: int) -> torch.Tensor:
    delta = torch.zeros([x, y])
    x_c, y_c = x // 2 + 1, y // 2 + 1
    counter2 = [x_c - 1, y_c - 1]
    for counter in range(0, max(x_c, y_c)):
        delta[max(counter2[0], 0):min(counter2[0] + (2 * counter + 1), x),
              max(0, counter2[1]):min(counter2[1] + (2 * counter + 1), y)] += 1.0 / (counter + 1) ** 2
        counter2[0] -= 1
        counter2[1] -= 1
    return delta / (delta ** 2).sum(dim=(0, 1), keepdim=True).sqrt()


def eta(s: int) -> torch.Tensor:
    """The L2 proposal shape (s, s) of unit norm: two opposite-signed pseudo-Gaussian halves (before its random
    orientation, which :func:`square` draws per example)."""
    delta = torch.zeros([s, s])
    delta[: s // 2] = _eta_rectangles(s // 2, s)
    delta[s // 2:] = -1.0 * _eta_rectangles(s - s // 2, s)
    return delta / (delta ** 2).sum(dim=(0, 1), keepdim=True).sqrt()


def _window(start: torch.Tensor, size: int, length: int) -> torch.Tensor:
    """(n, length) bool: positions start[b] .. start[b] + size - 1 of each row."""
    positions = torch.arange(length, device=start.device)
    return (positions >= start[:, None]) & (positions < start[:, None] + size)


def _position(u: torch.Tensor, high: int) -> torch.Tensor:
    """torchattacks' ``random_int(0, high)`` from uniform draws u (n,): ``(high * u).long()``."""
    return (high * u).long()


def _sign(u: torch.Tensor) -> torch.Tensor:
    """torchattacks' ``random_choice``: the sign of ``2u - 1`` (+1 or -1; 0 only when u is exactly 0.5)."""
    return torch.sign(2 * u - 1)


def _windows_index(n: int, c: int, vh: torch.Tensor, vw: torch.Tensor, s: int):
    """Advanced index of each example's (c, s, s) window at rows vh[b].., columns vw[b].."""
    device = vh.device
    rows = vh[:, None] + torch.arange(s, device=device)
    cols = vw[:, None] + torch.arange(s, device=device)
    return (torch.arange(n, device=device)[:, None, None, None], torch.arange(c, device=device)[None, :, None, None],
            rows[:, None, :, None], cols[:, None, None, :])


def draw_layout(norm: str, c: int, h: int, w: int) -> tuple[int, int]:
    """(draws for the starting point, draws per iteration) of one (c, h, w) example, in torchattacks' order: L∞
    starts with c x w stripe signs and draws per iteration the window row, column and c signs; L2 starts
    with a grid of squares of side h // 5, each (orientation, c signs), and draws per iteration two
    windows' rows and columns, an orientation and c signs."""
    if norm == "linf":
        return c * w, 2 + c
    side = h // 5
    return (h // side) * (w // side) * (c + 1), 5 + c


def square_draws(seeds: list[int], norm: str, shape: tuple[int, int, int], queries: int,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Every uniform draw :func:`square` can use, (B, start + queries x per-iteration), row b from ``seeds[b]``."""
    from robustmm.seeding import per_example_uniform

    first, per_step = draw_layout(norm, *shape)
    return per_example_uniform(seeds, (first + queries * per_step,), device)


def square(view: ClassifierView, clean: torch.Tensor, labels: torch.Tensor, draws: torch.Tensor, *, norm: str, eps: float,
           queries: int, p_init: float = 0.8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Square Attack on ``view`` from clean pixels (B, 3, H, W) in [0, 1], labels (B,) and each example's
    uniform draws (B, N) in [0, 1) (:func:`square_draws`; laid out as :func:`draw_layout` says).

    Returns the adversarial pixels (B, 3, H, W) (clean where no query misclassified the example), the
    broken flags (B,) and the forward queries each example used (B,): 1 for the initial point, then
    one per iteration until it is misclassified or ``queries`` iterations are spent.
    """
    with torch.no_grad():
        x, y = clean.clone(), labels.clone()
        b, (c, h, w) = x.shape[0], x.shape[1:]
        n_features = c * h * w
        first, per_step = draw_layout(norm, c, h, w)
        start, steps = draws[:, :first], draws[:, first:first + queries * per_step].reshape(b, queries, per_step)

        acc = view(x).max(1)[1] == y
        adv = x.clone()
        n_queries = torch.zeros(b, dtype=torch.long)
        todo = acc.nonzero().flatten()
        if todo.numel() == 0:
            return adv, ~acc.cpu(), n_queries
        part = view if todo.numel() == b else view.subset(todo)
        xs, ys = x[todo], y[todo]
        if norm == "linf":
            x_best = torch.clamp(xs + eps * _sign(start[todo]).view(-1, c, 1, w), 0.0, 1.0)
        else:
            x_best = torch.clamp(xs + _normalize(_l2_start(start[todo], c, h, w)) * eps, 0.0, 1.0)
        margin_min = margin(part(x_best), ys)
        used = torch.ones(len(todo), dtype=torch.long)
        for i_iter in range(queries):
            idx = (margin_min > 0.0).nonzero().flatten()
            if len(idx) == 0:
                break
            x_curr, x_best_curr, y_curr = xs[idx], x_best[idx], ys[idx]
            margin_min_curr = margin_min[idx]
            u = steps[todo[idx], i_iter]
            p = p_selection(p_init, i_iter, queries)
            if norm == "linf":
                s = max(int(round(math.sqrt(p * n_features / c))), 1)
                vh, vw = _position(u[:, 0], h - s), _position(u[:, 1], w - s)
                inside = (_window(vh, s, h)[:, None, :, None] & _window(vw, s, w)[:, None, None, :]).float()
                new_deltas = inside * (2.0 * eps * _sign(u[:, 2:2 + c]).view(-1, c, 1, 1))
                x_new = torch.min(torch.max(x_best_curr + new_deltas, x_curr - eps), x_curr + eps)
                x_new = torch.clamp(x_new, 0.0, 1.0)
            else:
                x_new = _l2_proposal(x_curr, x_best_curr, u, p, eps)
            margin_new = margin((part if len(idx) == len(todo) else part.subset(idx))(x_new), y_curr)
            # the margin loss: a proposal is kept when it lowers the margin (or misclassifies, margin <= 0)
            improved = (margin_new < margin_min_curr).float()
            improved = torch.max(improved, (margin_new <= 0.0).float())
            margin_min[idx] = improved * margin_new + (1.0 - improved) * margin_min_curr
            keep = improved.view(-1, 1, 1, 1)
            x_best[idx] = keep * x_new + (1.0 - keep) * x_best_curr
            used[idx] += 1
        broken = margin_min <= 0.0
        adv[todo[broken]] = x_best[broken]
        n_queries[todo.cpu()] = used
        fooled = torch.zeros(b, dtype=torch.bool)
        fooled[todo.cpu()] = broken.cpu()
        return adv, fooled, n_queries


def _normalize(delta: torch.Tensor) -> torch.Tensor:
    """Each example's delta (n, c, h, w) scaled to unit L2 norm."""
    t = (delta ** 2).view(delta.shape[0], -1).sum(-1).sqrt()
    return delta / (t.view(-1, 1, 1, 1) + 1e-12)


def _l2_norm(delta: torch.Tensor) -> torch.Tensor:
    return (delta ** 2).view(delta.shape[0], -1).sum(-1).sqrt().view(-1, 1, 1, 1)


def _l2_start(u: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    """The L2 starting perturbation (n, c, h, w) before scaling: a 5 x 5 grid of pseudo-Gaussian squares with
    per-example, per-channel signs and orientations (torchattacks draws both once for the batch)."""
    n = u.shape[0]
    s = h // 5
    shape = eta(s).to(u.device)
    delta = torch.zeros(n, c, h, w, device=u.device)
    sp_init = (h - s * 5) // 2
    block = 0
    vh = sp_init
    for _ in range(h // s):
        vw = sp_init
        for _ in range(w // s):
            draw = u[:, block * (c + 1):(block + 1) * (c + 1)]
            oriented = torch.where((draw[:, 0] > 0.5).view(-1, 1, 1), shape.t(), shape)
            delta[:, :, vh:vh + s, vw:vw + s] += oriented.view(n, 1, s, s) * _sign(draw[:, 1:]).view(n, c, 1, 1)
            vw += s
            block += 1
        vh += s
    return delta


def _l2_proposal(x_curr: torch.Tensor, x_best_curr: torch.Tensor, u: torch.Tensor, p: float, eps: float) -> torch.Tensor:
    """One L2 proposal per example (torchattacks' L2 step with per-example windows, signs and orientation): move
    the mass of a second window into a new pseudo-Gaussian square in the first, keeping the norm at ``eps``."""
    n, c, h, w = x_curr.shape
    delta_curr = x_best_curr - x_curr
    s = max(int(round(math.sqrt(p * c * h * w / c))), 3)
    if s % 2 == 0:
        s += 1
    vh, vw = _position(u[:, 0], h - s), _position(u[:, 1], w - s)
    vh2, vw2 = _position(u[:, 2], h - s), _position(u[:, 3], w - s)
    first = _windows_index(n, c, vh, vw, s)
    second = _windows_index(n, c, vh2, vw2, s)
    mask_1 = (_window(vh, s, h)[:, None, :, None] & _window(vw, s, w)[:, None, None, :])
    mask_2 = (_window(vh2, s, h)[:, None, :, None] & _window(vw2, s, w)[:, None, None, :])
    norms_window_1 = (delta_curr[first] ** 2).sum(dim=(-2, -1), keepdim=True).sqrt()
    norms_image = _l2_norm(delta_curr)
    norms_windows = _l2_norm(delta_curr * (mask_1 | mask_2).float())
    shape = eta(s).to(x_curr.device)
    oriented = torch.where((u[:, 4] > 0.5).view(-1, 1, 1), shape.t(), shape)
    new_deltas = torch.ones([n, c, s, s], device=x_curr.device) * oriented.view(n, 1, s, s) * _sign(u[:, 5:5 + c]).view(n, c, 1, 1)
    new_deltas += delta_curr[first] / (1e-12 + norms_window_1)
    new_deltas = new_deltas / (1e-12 + (new_deltas ** 2).sum(dim=(-2, -1), keepdim=True).sqrt()) * (
        torch.max((eps * torch.ones_like(new_deltas)) ** 2 - norms_image ** 2, torch.zeros_like(new_deltas)) / c
        + norms_windows ** 2).sqrt()
    delta_curr[second] = 0.0
    delta_curr[first] = new_deltas + 0
    return torch.clamp(x_curr + _normalize(delta_curr) * eps, 0.0, 1.0)


@dataclass(frozen=True)
class SquareConfig:
    """norm: ``linf`` or ``l2``; eps: budget on the [0, 1] pixel scale; queries: iterations (one forward query each,
    after one for the starting point); p_init: initial fraction of pixels a proposal changes; subset: attack only a
    seeded fraction of the examples."""

    norm: str = "linf"
    eps: float = field(default=8 / 255, metadata=PIXEL_SCALE_LINF)
    queries: int = 1000
    p_init: float = field(default=0.8, metadata=IF_SET)
    subset: float = field(default=1.0, metadata=IF_SET)

    def __post_init__(self) -> None:
        check_norm_eps("square", self.norm, self.eps)
        if self.queries < 1:
            raise RobustMMError(f"square queries must be at least 1, not {self.queries}.")
        check_finite(self.p_init, "square p_init (a fraction of the pixels)", 0.0, 1.0, low_open=True)
        check_finite(self.subset, "square subset (a fraction of the examples)", 0.0, 1.0, low_open=True)


@register_attack
class Square(PixelAttack):
    r"""Square Attack: score-based black-box random search (Andriushchenko et al. 2020, https://arxiv.org/abs/1912.00049).

    From 'Square Attack: a query-efficient black-box adversarial attack via random search'. Score-based black-box random search: starting from vertical stripes of ±eps (L∞) or a grid of
    pseudo-Gaussian squares (L2), each iteration proposes a change of one square window (its side shrinking
    on a fixed schedule) and keeps it when the margin between the label's score and the best other score
    falls. Uses only the model's scores (no gradients), so it is unaffected by gradient masking: if it
    beats a white-box attack, the white-box attack was weakened. Every random choice is per example.

    Distance Measure : Linf, L2

    Arguments (config):
        norm (str): ``linf`` or ``l2``. (Default: linf)
        eps (float): budget on the [0, 1] scale. (Default: 8/255)
        queries (int): query budget (iterations) per example. (Default: 1000; AutoAttack uses 5000)
        p_init (float): initial fraction of pixels changed per proposal. (Default: 0.8)
        subset (float): attack only this seeded fraction of the examples. (Default: 1)

    ``queries`` in info: the forward queries the example used (1 + iterations until misclassified).

    Shape:
        - batch.pixels: :math:`(B, 3, H, W)` in [0, 1]; batch.targets: :math:`(B)` candidate indices or -100.
        - result.pixels: :math:`(B, 3, H, W)` in [0, 1] (clean where the attack failed); result.scores: :math:`(B, C)`.

    Examples::
        >>> attack = parse_attack_spec("square:eps=8/255,queries=5000")
        >>> result = attack.run(model, batch)
    """

    name = "square"
    Config = SquareConfig
    paper = "https://arxiv.org/abs/1912.00049"

    def perturb(self, view, clean, labels, batch):
        c = self.config
        draws = square_draws(self.example_seeds(batch), c.norm, tuple(clean.shape[1:]), c.queries, clean.device)
        adversarial, _, used = square(view, clean, labels, draws, norm=c.norm, eps=c.eps, queries=c.queries, p_init=c.p_init)
        return Perturbation(adversarial, used.tolist(), [{} for _ in range(len(batch))])
