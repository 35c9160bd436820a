"""Evaluation checks: is each member's image attack as strong as it looks? Pure functions of AttackRecords.

The six checks follow the checklist of Carlini et al., 'On Evaluating Adversarial Robustness'
([https://arxiv.org/abs/1902.06705]) and AutoAttack's ``checks.py`` ([https://arxiv.org/abs/2003.01690]);
prompt tuning has been shown to obfuscate gradients (ADAPT, [https://arxiv.org/abs/2403.13196]), so a
member can look robust only because the gradients it gives an attack are useless. Per member and dataset:

1. iterative >= one-step: PGD / APGD-CE succeed at least as often as FGSM at the same ε, on the same examples;
2. ε-curve: success grows with ε and reaches ~100% (>= 95%, or all but one example) at a large budget (L∞ ε >= 64/255);
3. noise << white-box: uniform noise of the same ε succeeds at most half as often as the strongest white-box attack;
4. black-box / transfer <= white-box: Square (alone or inside the worst-case ensemble) and transfer attacks break
   no more than 0.2% of the examples that every white-box attack at the same ε failed on (AutoAttack's rule);
5. convergence: more steps / restarts (same attack otherwise, e.g. APGD 10 vs 100 steps, 1 vs 5 restarts on a
   seeded subset; a worst-case ensemble's first component counts as run alone) lower robust accuracy by at
   most 1 point on the examples both ran on;
6. zero gradients: at most 1% of the attacked examples had an all-zero or non-finite input gradient at the start.

A check is PASS or WARN with its numbers, or "not run" when the records lack the attacks it needs. Success rate =
succeeded / attacked (SKIPPED records, the examples a member already got wrong, are not attacked); records an
attack left outside its seeded ``subset`` are ignored. :func:`verdict_warnings` gives the sentence a verdict
must carry for a member that warns; :func:`qualify_verdict` adds it to a sentence that calls that member
more robust.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

from robustmm.attacks.base import format_key_value
from robustmm.types import AttackRecord, Status

PASS, WARN, NOT_RUN = "PASS", "WARN", "not run"

BEAT_TOLERANCE = 0.002  # AutoAttack's check_square_sr: a weaker attack may exceed a stronger one by 0.2 points
NOISE_RATIO = 0.5  # noise must succeed at most half as often as the strongest white-box attack
CONVERGENCE_POINTS = 0.01  # more steps / restarts may lower robust accuracy by at most 1 point
REACH = 0.95  # success the ε-curve must reach at a large budget
LARGE_EPS = {"linf": 64 / 255, "l2": 16.0}  # a "large budget" per norm (L2: of a whole image on the [0, 1] scale)
ZERO_GRAD_SHARE = 0.01  # at most 1% of attacked examples with a zero or non-finite input gradient

ONE_STEP = ("fgsm",)
ITERATIVE_CE = ("pgd-linf", "pgd-l2", "apgd-ce")  # iterative white-box attacks on the same loss as FGSM
WHITE_BOX = ("fgsm", "pgd-linf", "pgd-l2", "apgd-ce", "apgd-dlr")
BLACK_BOX = ("square",)
TRANSFER = ("transfer",)
NOISE = ("noise-linf",)
ENSEMBLE = ("worst-case",)
CURVE = ("pgd-linf", "pgd-l2", "apgd-ce", "apgd-dlr", "worst-case")
BUDGET_PARAMS = ("steps", "restarts", "queries")  # more of these = a stronger version of the same attack
NAMES = {1: "iterative ≥ one-step", 2: "success grows with ε to ~100%", 3: "noise ≪ white-box",
         4: "black-box / transfer ≤ white-box", 5: "convergence (steps, restarts)", 6: "zero gradients"}
MEMBERS = {"prompt": "prompt-tuned member", "finetune": "finetuned member"}


@dataclass(frozen=True)
class CheckResult:
    """One check for one member on one dataset: ``status`` PASS / WARN / not run, ``numbers`` (what was measured,
    for the table) and ``problem`` (a short phrase for the verdict when it warns, e.g. "black-box beat white-box at
    8/255")."""

    scope: str  # "task/dataset"
    member: str
    number: int
    name: str
    status: str
    numbers: str
    problem: str | None = None


# ---------------------------------------------------------------------------
# Reading attack keys and records
# ---------------------------------------------------------------------------


def parse_key(key: str) -> tuple[str, dict[str, str]]:
    """``"apgd-ce(norm=linf, eps=8/255, steps=100)"`` -> ``("apgd-ce", {"norm": "linf", "eps": "8/255", ...})``;
    values may hold parentheses and commas of their own (a transfer key names its source attack's key)."""
    name, _, rest = key.partition("(")
    if not rest.endswith(")"):
        return name.strip(), {}
    params: dict[str, str] = {}
    depth, item = 0, ""
    for char in rest[:-1] + ",":
        if char == "," and depth == 0:
            field, _, value = item.strip().partition("=")
            if field:
                params[field] = value
            item = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        item += char
    return name.strip(), params


def threat_model(record: AttackRecord) -> tuple[str, float] | None:
    """(norm, ε) of an image attack record: ``norm`` from its key (``pgd-l2``: l2; a transfer record: its source
    attack's), ε from the record; None without an ε."""
    if record.eps is None:
        return None
    return _norm(*parse_key(record.attack_key)), round(float(record.eps), 9)


def _norm(name: str, params: dict[str, str]) -> str:
    if "norm" in params:
        return params["norm"]
    if name == "transfer" and "attack" in params:
        return _norm(*parse_key(params["attack"]))
    return "l2" if name.endswith("-l2") else "linf"


def _family(key: str, drop: Sequence[str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    name, params = parse_key(key)
    return name, tuple(sorted((k, v) for k, v in params.items() if k not in drop))


def first_component_record(record: AttackRecord) -> AttackRecord | None:
    """What a worst-case record says about its first component, which ran alone on every attacked example with its
    own key's draws: a record of that component (succeeded where it broke the example), or None where the
    example was not attacked. Lets e.g. the convergence check compare APGD-CE-10 with the ensemble's APGD-CE-100
    without running it twice."""
    from dataclasses import replace

    ran = (record.details or {}).get("ran") or []
    if record.status is Status.SKIPPED or not ran:
        return None
    first = ran[0]
    broke = record.details.get("broken_by") == first and record.status is Status.SUCCEEDED
    return replace(record, attack=parse_key(first)[0], attack_key=first, details={},
                   status=Status.SUCCEEDED if broke else Status.FAILED,
                   adv_score=record.adv_score if broke else record.clean_score,
                   adv_prediction=record.adv_prediction if broke else record.clean_prediction)


def _targeted(key: str) -> bool:
    return parse_key(key)[1].get("targeted") == "True"


def _in_scope(record: AttackRecord) -> bool:
    return not (record.details or {}).get("outside_subset", False)


def _eps_text(norm: str, eps: float) -> str:
    return format_key_value(float(eps), pixel_scale=norm == "linf")


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


class _Runs:
    """The records of one member on one dataset, indexed by attack key, plus the records of each worst-case
    ensemble's first component (see :func:`first_component_record`) where that key was not run alone."""

    def __init__(self, records: Iterable[AttackRecord]) -> None:
        self.by_key: dict[str, list[AttackRecord]] = defaultdict(list)
        ensembles = []
        for record in records:
            if _in_scope(record):
                self.by_key[record.attack_key].append(record)
                if record.attack in ENSEMBLE:
                    ensembles.append(record)
        alone = {(r.attack_key, r.example_id) for rows in self.by_key.values() for r in rows}
        for record in ensembles:
            first = first_component_record(record)
            if first is not None and (first.attack_key, first.example_id) not in alone:
                self.by_key[first.attack_key].append(first)

    def keys(self, names: Sequence[str], untargeted: bool = True) -> list[str]:
        return sorted(k for k, rows in self.by_key.items()
                      if rows[0].attack in names and not (untargeted and _targeted(k)))

    def threat(self, key: str) -> tuple[str, float] | None:
        return threat_model(self.by_key[key][0])

    def attacked(self, key: str) -> dict[str, bool]:
        """example id -> succeeded, over the examples the attack was run on (not SKIPPED)."""
        return {r.example_id: r.status is Status.SUCCEEDED for r in self.by_key[key] if r.status is not Status.SKIPPED}

    def robust(self, key: str) -> dict[str, float]:
        """example id -> adversarial score (robust accuracy terms, SKIPPED included as their clean score)."""
        return {r.example_id: r.adv_score for r in self.by_key[key]}


def _rate(outcomes: dict[str, bool], ids: set[str]) -> float:
    return sum(outcomes[i] for i in ids) / len(ids) if ids else float("nan")


# ---------------------------------------------------------------------------
# The six checks (each: _Runs -> CheckResult fields)
# ---------------------------------------------------------------------------


def _check_one_step(runs: _Runs):
    found, warn = [], []
    for fgsm in runs.keys(ONE_STEP):
        threat = runs.threat(fgsm)
        for other in runs.keys(ITERATIVE_CE):
            if runs.threat(other) != threat:
                continue
            a, b = runs.attacked(fgsm), runs.attacked(other)
            ids = set(a) & set(b)
            if not ids:
                continue
            one, many = _rate(a, ids), _rate(b, ids)
            text = f"{_eps_text(*threat)}: {_short(other)} {_pct(many)} vs FGSM {_pct(one)} (n={len(ids)})"
            found.append(text)
            if many < one - BEAT_TOLERANCE:
                warn.append((threat, text))
    if not found:
        return NOT_RUN, "needs FGSM and PGD / APGD-CE at the same ε", None
    if warn:
        return WARN, "; ".join(found), f"one-step FGSM beat the iterative attack at {_eps_text(*warn[0][0])}"
    return PASS, "; ".join(found), None


def _check_curve(runs: _Runs):
    families: dict[tuple, dict[float, str]] = defaultdict(dict)
    for key in runs.keys(CURVE):
        threat = runs.threat(key)
        if threat is not None:
            families[(threat[0], _family(key, ("eps", "alpha", "subset")))][threat[1]] = key
    texts, problems, reached = [], [], False
    for (norm, (name, _)), by_eps in sorted(families.items()):
        if len(by_eps) < 2:
            continue
        outcomes = {eps: runs.attacked(key) for eps, key in by_eps.items()}
        ids = set.intersection(*(set(o) for o in outcomes.values()))
        if not ids:
            continue
        curve = [(eps, _rate(outcomes[eps], ids)) for eps in sorted(by_eps)]
        texts.append(f"{name}: " + ", ".join(f"{_eps_text(norm, e)} {_pct(r)}" for e, r in curve) + f" (n={len(ids)})")
        falls = [e for (_, r0), (e, r1) in zip(curve, curve[1:]) if r1 < r0 - BEAT_TOLERANCE]
        if falls:
            problems.append(f"{name}'s success fell as ε grew to {_eps_text(norm, falls[0])}")
        large = [(e, r) for e, r in curve if e >= LARGE_EPS[norm] - 1e-9]
        if large:
            best = max(r for _, r in large)
            if best < REACH and round((1 - best) * len(ids)) > 1:
                problems.append(f"{name}'s success flattens at {_pct(max(r for _, r in large))} even at "
                                f"{_eps_text(norm, large[-1][0])}")
            else:
                reached = True
    if not texts:
        return NOT_RUN, "needs one iterative attack at two or more ε", None
    if problems:
        return WARN, "; ".join(texts), problems[0]
    if not reached:
        return NOT_RUN, "; ".join(texts) + f"; no ε ≥ {_eps_text('linf', LARGE_EPS['linf'])} run to see it reach ~100%", None
    return PASS, "; ".join(texts), None


def _check_noise(runs: _Runs):
    texts, warn = [], None
    for noise in runs.keys(NOISE):
        threat = runs.threat(noise)
        best = None
        for other in runs.keys(WHITE_BOX):
            if runs.threat(other) != threat:
                continue
            a, b = runs.attacked(noise), runs.attacked(other)
            ids = set(a) & set(b)
            if ids and (best is None or _rate(b, ids) > best[1]):
                best = (other, _rate(b, ids), _rate(a, ids), len(ids))
        if best is None:
            continue
        other, white, random_rate, n = best
        texts.append(f"{_eps_text(*threat)}: noise {_pct(random_rate)} vs {_short(other)} {_pct(white)} (n={n})")
        if random_rate > NOISE_RATIO * white and warn is None:
            warn = f"random noise is nearly as strong as the white-box attack at {_eps_text(*threat)}"
    if not texts:
        return NOT_RUN, "needs noise-linf and a white-box attack at the same ε", None
    return (WARN if warn else PASS), "; ".join(texts), warn


def _check_black_box(runs: _Runs):
    by_threat: dict[tuple, dict[str, set]] = defaultdict(lambda: {"white": set(), "black": set(), "tried_white": set(),
                                                                   "tried_black": set(), "all": set(), "kinds": set()})
    for key, rows in runs.by_key.items():
        name = rows[0].attack
        threat = runs.threat(key)
        if threat is None or name not in WHITE_BOX + BLACK_BOX + TRANSFER + ENSEMBLE:
            continue
        slot = by_threat[threat]
        for r in rows:
            slot["all"].add(r.example_id)
            if r.status is Status.SKIPPED:
                continue
            if name in WHITE_BOX:
                slot["tried_white"].add(r.example_id)
                if r.status is Status.SUCCEEDED:
                    slot["white"].add(r.example_id)
            elif name in BLACK_BOX + TRANSFER:
                slot["tried_black"].add(r.example_id)
                slot["kinds"].add("transfer" if name in TRANSFER else "black-box")
                if r.status is Status.SUCCEEDED:
                    slot["black"].add(r.example_id)
            else:  # worst-case: its components in order, black-box ones only after the white-box ones failed
                ran = (r.details or {}).get("ran", [])
                broken_by = (r.details or {}).get("broken_by")
                white_ran = [k for k in ran if parse_key(k)[0] in WHITE_BOX]
                black_ran = [k for k in ran if parse_key(k)[0] in BLACK_BOX]
                if white_ran:
                    slot["tried_white"].add(r.example_id)
                if black_ran:
                    slot["tried_black"].add(r.example_id)
                    slot["kinds"].add("black-box")
                if broken_by in white_ran and r.status is Status.SUCCEEDED:
                    slot["white"].add(r.example_id)
                if broken_by in black_ran and r.status is Status.SUCCEEDED:
                    slot["black"].add(r.example_id)
    texts, warn = [], None
    for threat, slot in sorted(by_threat.items()):
        ids = slot["tried_white"] & slot["tried_black"]
        if not ids:
            continue
        only_black = (slot["black"] - slot["white"]) & ids
        n = len(slot["all"])
        kinds = " / ".join(sorted(slot["kinds"]))
        texts.append(f"{_eps_text(*threat)}: {len(only_black)} of {n} broken only by {kinds} ({_pct(len(only_black) / n)})")
        if len(only_black) / n > BEAT_TOLERANCE and warn is None:
            warn = f"{kinds} beat white-box at {_eps_text(*threat)}"
    if not texts:
        return NOT_RUN, "needs Square, worst-case or transfer records beside a white-box attack at the same ε", None
    return (WARN if warn else PASS), "; ".join(texts), warn


def _check_convergence(runs: _Runs):
    families: dict[tuple, list[str]] = defaultdict(list)
    for key in runs.keys(WHITE_BOX + ENSEMBLE):
        families[_family(key, BUDGET_PARAMS + ("alpha", "subset"))].append(key)
    texts, warn = [], None
    for (name, _), keys in sorted(families.items()):
        budgets = {k: _budget(k) for k in keys}
        for weak in keys:
            for strong in keys:
                if weak == strong or not _stronger(budgets[strong], budgets[weak]):
                    continue
                a, b = runs.robust(weak), runs.robust(strong)
                ids = set(a) & set(b)
                if not ids:
                    continue
                ra_weak, ra_strong = sum(a[i] for i in ids) / len(ids), sum(b[i] for i in ids) / len(ids)
                threat = runs.threat(strong)
                where = f" at {_eps_text(*threat)}" if threat else ""
                texts.append(f"{name}{where}: {_budget_text(budgets[weak])} {_pct(ra_weak)} → "
                             f"{_budget_text(budgets[strong])} {_pct(ra_strong)} robust (n={len(ids)})")
                # more than the tolerance, and by more than one example (on a small subset one example is many points)
                if ra_weak - ra_strong > CONVERGENCE_POINTS and round((ra_weak - ra_strong) * len(ids)) > 1 and warn is None:
                    warn = (f"{name}{where} had not converged at {_budget_text(budgets[weak])} ({_budget_text(budgets[strong])} "
                            f"lowered robust accuracy by {100 * (ra_weak - ra_strong):.1f} points)")
    if not texts:
        return NOT_RUN, "needs one attack at two step / restart budgets (e.g. the cpu-checks preset)", None
    return (WARN if warn else PASS), "; ".join(texts), warn


def _budget(key: str) -> dict[str, int]:
    params = parse_key(key)[1]
    return {p: int(params[p]) for p in BUDGET_PARAMS if p in params and params[p].isdigit()}


def _stronger(a: dict[str, int], b: dict[str, int]) -> bool:
    return a.keys() == b.keys() and all(a[p] >= b[p] for p in a) and any(a[p] > b[p] for p in a)


def _budget_text(budget: dict[str, int]) -> str:
    return " × ".join(f"{v} {k}" for k, v in budget.items())


def _check_zero_grad(runs: _Runs):
    flags = [r.details["zero_grad"] for rows in runs.by_key.values() for r in rows
             if r.status is not Status.SKIPPED and isinstance((r.details or {}).get("zero_grad"), bool)]
    if not flags:
        return NOT_RUN, "no gradient attack recorded zero_grad", None
    share = sum(flags) / len(flags)
    text = f"{sum(flags)} of {len(flags)} attacked examples ({_pct(share)})"
    if share > ZERO_GRAD_SHARE:
        return WARN, text, f"{_pct(share)} of the input gradients were zero or not finite"
    return PASS, text, None


def _short(key: str) -> str:
    """A compact attack name for tables: ``PGD-10``, ``APGD-CE-100`` (or the name)."""
    name, params = parse_key(key)
    steps = params.get("steps")
    return f"{name.upper().replace('-LINF', '')}-{steps}" if steps else name.upper()


CHECKS = {1: _check_one_step, 2: _check_curve, 3: _check_noise, 4: _check_black_box, 5: _check_convergence,
          6: _check_zero_grad}


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def run_checks(records: Iterable[AttackRecord]) -> list[CheckResult]:
    """The six checks for every (dataset, member) among ``records`` (image attacks; others are ignored), in
    dataset, member (prompt-tuned first), check order."""
    groups: dict[tuple[str, str], list[AttackRecord]] = defaultdict(list)
    for record in records:
        if record.modality == "image" or record.attack in TRANSFER:
            groups[(f"{record.task}/{record.dataset}", record.member)].append(record)
    order = {"prompt": 0, "finetune": 1}
    results = []
    for scope, member in sorted(groups, key=lambda g: (g[0], order.get(g[1], 2), g[1])):
        runs = _Runs(groups[(scope, member)])
        for number, check in CHECKS.items():
            status, numbers, problem = check(runs)
            results.append(CheckResult(scope, member, number, NAMES[number], status, numbers, problem))
    return results


def member_label(member: str) -> str:
    return MEMBERS.get(member, f"{member} member")


def verdict_warnings(results: Sequence[CheckResult], scope: str | None = None) -> list[str]:
    """One sentence per member (of ``scope``, or of every dataset, then prefixed with it) whose checks warn, e.g.
    ``prompt-tuned member: WARN — black-box beat white-box at 8/255; robust accuracy may be overestimated``."""
    by_member: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in results:
        if r.status == WARN and (scope is None or r.scope == scope):
            by_member[(r.scope, r.member)].append(r.problem or r.name)
    scopes = {s for s, _ in by_member}
    out = []
    for (where, member), problems in by_member.items():
        prefix = f"{where.split('/', 1)[-1]}, " if scope is None and len(scopes) > 1 else ""
        out.append(f"{prefix}{member_label(member)}: WARN — {'; '.join(problems)}; robust accuracy may be overestimated")
    return out


def qualify_verdict(sentence: str, more_robust: str | None, results: Sequence[CheckResult], scope: str) -> str:
    """``sentence`` (a verdict that calls member ``more_robust`` more robust, or None) with the warning it must carry
    when that member's checks warn on ``scope``; unchanged otherwise."""
    if more_robust is None:
        return sentence
    problems = [r.problem or r.name for r in results if r.scope == scope and r.member == more_robust and r.status == WARN]
    if not problems:
        return sentence
    return (f"{sentence.rstrip('.')}, but the {member_label(more_robust)}'s evaluation checks warn ({'; '.join(problems)}): "
            "its robust accuracy may be overestimated.")


def checks_table(results: Sequence[CheckResult]) -> list[str]:
    """Markdown lines: per dataset, one row per check and one column per member, each cell ``STATUS — numbers``."""
    lines: list[str] = []
    scopes = sorted({r.scope for r in results})
    for scope in scopes:
        rows = [r for r in results if r.scope == scope]
        members = list(dict.fromkeys(r.member for r in rows))
        if lines:
            lines.append("")
        lines.append(f"**{scope.split('/', 1)[-1]}**")
        lines.append("")
        lines.append("| check | " + " | ".join(member_label(m) for m in members) + " |")
        lines.append("|---|" + "---|" * len(members))
        for number, name in NAMES.items():
            cells = []
            for member in members:
                found = [r for r in rows if r.member == member and r.number == number]
                cells.append(f"{found[0].status} — {found[0].numbers}".replace("|", "/") if found else "")
            lines.append(f"| {number}. {name} | " + " | ".join(cells) + " |")
    return lines
