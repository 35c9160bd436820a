"""The worst-case ensemble: AutoAttack's per-example evaluation as one attack.

From 'Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks' (Croce & Hein 2020, [https://arxiv.org/abs/2003.01690]): run diverse attacks in order and
count an example as robust only if every one of them failed; each later attack runs only on the
examples still robust (AutoAttack's ``robust_flags``), so its cost grows with those, not with the
batch. Each component draws its random numbers from its *own* canonical key and the example id,
so on every example it does exactly what it does when run alone: the ensemble breaks an example
if and only if some component, run alone, breaks it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch

from robustmm.attacks.apgd import APGDCE, APGDDLR, dlr_refusal
from robustmm.attacks.base import IF_SET, PIXEL_SCALE_LINF, AttackBatch, check_finite, register_attack
from robustmm.attacks.image import Perturbation, PixelAttack, check_norm_eps
from robustmm.attacks.square import Square
from robustmm.errors import RobustMMError

COMPONENTS = ("apgd-ce", "apgd-dlr", "apgd-t", "square")  # apgd-t: targeted DLR (apgd-dlr with targeted=true)


@dataclass(frozen=True)
class WorstCaseConfig:
    """norm / eps: the threat model every component attacks in; attacks: components in order, from apgd-ce,
    apgd-dlr, apgd-t (targeted DLR) and square; steps / restarts / eot: of the APGD components; queries: Square's
    budget; subset: attack only a seeded fraction of the examples."""

    norm: str = "linf"
    eps: float = field(default=8 / 255, metadata=PIXEL_SCALE_LINF)
    attacks: tuple[str, ...] = ("apgd-ce", "apgd-dlr", "square")
    steps: int = 100
    restarts: int = 1
    queries: int = 1000
    eot: int = field(default=1, metadata=IF_SET)
    subset: float = field(default=1.0, metadata=IF_SET)

    def __post_init__(self) -> None:
        check_norm_eps("worst-case", self.norm, self.eps)
        if not self.attacks:
            raise RobustMMError("worst-case needs at least one attack, e.g. attacks=apgd-ce+apgd-dlr+square.")
        unknown = [a for a in self.attacks if a not in COMPONENTS]
        if unknown:
            raise RobustMMError(f"worst-case cannot run {unknown[0]!r}: its attacks are chosen from {', '.join(COMPONENTS)}.")
        if len(set(self.attacks)) != len(self.attacks):
            raise RobustMMError(f"worst-case lists an attack twice: {'+'.join(self.attacks)}.")
        for name in ("steps", "restarts", "queries", "eot"):
            if getattr(self, name) < 1:
                raise RobustMMError(f"worst-case {name} must be at least 1, not {getattr(self, name)}.")
        check_finite(self.subset, "worst-case subset (a fraction of the examples)", 0.0, 1.0, low_open=True)

    def hidden_in_key(self) -> tuple[str, ...]:
        """Parameters of components that are not in the list mean nothing."""
        hidden = () if any(a.startswith("apgd") for a in self.attacks) else ("steps", "restarts", "eot")
        return hidden + (() if "square" in self.attacks else ("queries",))


@register_attack
class WorstCase(PixelAttack):
    r"""AutoAttack-style worst case per example over APGD-CE, APGD-DLR, Square (https://arxiv.org/abs/2003.01690).

    From 'Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks'
    (Croce & Hein 2020). Runs the component attacks in order (default: APGD-CE, APGD-DLR where the model has at least 3 candidate
    answers, Square), each only on the examples every earlier one failed on; an example is robust only if all
    of them failed. Components that cannot run on the model (DLR with fewer than 3 candidates, apgd-t with
    fewer than 4, e.g. SNLI-VE's three labels) are left out. Each component uses its own key's per-example
    seeds, so it does on every example exactly what it does alone. This is the headline image robustness.

    Distance Measure : Linf, L2

    Arguments (config):
        norm (str): ``linf`` or ``l2``. (Default: linf)
        eps (float): budget on the [0, 1] scale. (Default: 8/255)
        attacks (tuple): components in order, ``+``-separated in specs. (Default: apgd-ce+apgd-dlr+square)
        steps (int), restarts (int), eot (int): of the APGD components. (Default: 100, 1, 1)
        queries (int): Square's query budget. (Default: 1000; the GPU preset uses 5000)
        subset (float): attack only this seeded fraction of the examples. (Default: 1)

    Details (``info[i]["details"]``): ``ran`` (canonical keys of the components run on the example, in order;
    empty when it was misclassified already), ``broken_by`` (the key of the component that broke it, or None
    when none did), ``zero_grad`` (of the
    first gradient component that ran, as apgd-ce). ``queries``: the sum over the components that ran.

    Shape:
        - batch.pixels: :math:`(B, 3, H, W)` in [0, 1]; batch.targets: :math:`(B)` candidate indices or -100.
        - result.pixels: :math:`(B, 3, H, W)` in [0, 1] (the breaking component's, clean where all failed);
          result.scores: :math:`(B, C)`.

    Examples::
        >>> attack = parse_attack_spec("worst-case:eps=8/255,attacks=apgd-ce+apgd-dlr+square,queries=5000")
        >>> result = attack.run(model, batch)
    """

    name = "worst-case"
    white_box = True
    Config = WorstCaseConfig
    paper = "https://arxiv.org/abs/2003.01690"

    def components(self, candidates: int | None = None) -> list[PixelAttack]:
        """The component attacks in order; with ``candidates``, only those that can run on a model with that many."""
        c = self.config
        apgd = dict(norm=c.norm, eps=c.eps, steps=c.steps, restarts=c.restarts, eot=c.eot)
        built = {"apgd-ce": lambda: APGDCE(**apgd), "apgd-dlr": lambda: APGDDLR(**apgd),
                 "apgd-t": lambda: APGDDLR(**apgd, targeted=True), "square": lambda: Square(norm=c.norm, eps=c.eps, queries=c.queries)}
        out = []
        for name in c.attacks:
            if candidates is not None and name in ("apgd-dlr", "apgd-t") and dlr_refusal(candidates, name == "apgd-t"):
                continue
            out.append(built[name]())
        return out

    def check_model(self, model) -> None:
        if not self.components(len(model.candidates)):
            raise RobustMMError(f"None of worst-case's attacks ({'+'.join(self.config.attacks)}) can run on a model with "
                                f"{len(model.candidates)} candidate answers: {dlr_refusal(len(model.candidates), True)}")

    def perturb(self, view, clean, labels, batch: AttackBatch) -> Perturbation:
        b = clean.shape[0]
        adversarial = clean.clone()
        with torch.no_grad():  # AutoAttack's robust_flags start from the clean predictions
            robust = (view(clean).argmax(dim=1) == labels).cpu()
        queries = [0] * b
        details = [{"ran": [], "broken_by": None} for _ in range(b)]
        for component in self.components(len(view.model.candidates)):
            still = robust.nonzero().flatten().tolist()
            if not still:
                break
            everything = len(still) == b
            part = view if everything else view.subset(still)
            part_batch = batch if everything else AttackBatch([batch.examples[i] for i in still], batch.pixels[still],
                                                              [batch.texts[i] for i in still], batch.targets[still], batch.seed)
            out = component.perturb(part, clean[still], labels[still], part_batch)
            with torch.no_grad():
                broken = (part(out.pixels).argmax(dim=1) != labels[still]).cpu()
            key = component.key()
            for j, i in enumerate(still):
                queries[i] += out.queries[j]
                details[i]["ran"].append(key)
                if out.details[j].get("zero_grad") is not None:
                    details[i].setdefault("zero_grad", out.details[j]["zero_grad"])
                if broken[j]:
                    details[i]["broken_by"] = key
                    robust[i] = False
                    adversarial[i] = out.pixels[j]
        return Perturbation(adversarial, queries, details)


def component_counts(records: Iterable) -> dict[str, dict[str, int]]:
    """Per worst-case component key: on how many examples it ran and how many it broke, over ``records``
    (AttackRecords of worst-case attacks; records without ``details["ran"]`` are ignored). The ``ran`` counts
    fall from component to component: the ensemble's cost grows with the examples still robust."""
    counts: dict[str, dict[str, int]] = {}
    for record in records:
        details = record.details or {}
        for key in details.get("ran", []):
            row = counts.setdefault(key, {"ran": 0, "broke": 0})
            row["ran"] += 1
            row["broke"] += int(details.get("broken_by") == key)
    return counts


def component_table(records: Iterable) -> list[str]:
    """Markdown lines: per worst-case attack key, one row per (dataset, member) with each component's
    "broke / ran on" counts and the examples left robust, e.g. ``| easy-vqa | prompt | 16 / 32 | 2 / 16 | 0 / 14 | 14 |``."""
    groups: dict[str, dict[tuple[str, str], list]] = {}
    for record in records:
        if record.attack == "worst-case":
            groups.setdefault(record.attack_key, {}).setdefault((record.dataset, record.member), []).append(record)
    lines: list[str] = []
    for key, by_member in sorted(groups.items()):
        components = list(dict.fromkeys(k for rows in by_member.values() for r in rows for k in (r.details or {}).get("ran", [])))
        if lines:
            lines.append("")
        lines += [f"`{key}`: examples each component broke / ran on (each runs only on those still robust)", "",
                  "| dataset | member | " + " | ".join(f"`{k}`" for k in components) + " | robust |",
                  "|---|---|" + "---|" * (len(components) + 1)]
        for (dataset, member), rows in sorted(by_member.items()):
            counts = component_counts(rows)
            robust = sum(1 for r in rows if (r.details or {}).get("ran") and (r.details or {}).get("broken_by") is None)
            cells = [f"{counts.get(k, {}).get('broke', 0)} / {counts.get(k, {}).get('ran', 0)}" for k in components]
            lines.append(f"| {dataset} | {member} | " + " | ".join(cells) + f" | {robust} |")
    return lines

