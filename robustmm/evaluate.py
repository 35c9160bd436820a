"""The runner: attack both members of a pair on the same examples, one record per
(member, attack key, example), streamed to a RecordStore and resumable.

A record is a pure function of (settings, member, attack key, example): attacks draw their
randomness per example from (run seed, attack key, example id) (:mod:`robustmm.seeding`) and
the built-in model scores every example the same whatever its batch, so a record does not
depend on ``batch_size``, on the order examples are processed in, on a resume point or on the
process that made it. Missing records are simply computed; nothing is re-batched or dropped.

Work per (dataset, member): images are decoded once; the clean prediction of every example
is computed once and reused by every attack setting; an example the member answers wrongly
clean is recorded as SKIPPED without running the attack (its outcome is determined); only the
others are attacked, in batches of ``batch_size``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from robustmm.attacks.base import Attack, AttackBatch
from robustmm.data.dataset import Dataset
from robustmm.data.images import to_tensor
from robustmm.errors import RobustMMError
from robustmm.metrics import answer_score, is_correct
from robustmm.models.pair import ModelPair
from robustmm.records import RecordStore
from robustmm.types import AttackRecord, Example, Status

log = logging.getLogger(__name__)

Progress = Callable[[str, str, int], None]  # (member, attack_key, examples just finished)


def expand_eps(attacks: Sequence[Attack], eps_linf: Sequence[float] | None = None,
               eps_l2: Sequence[float] | None = None) -> list[Attack]:
    """One copy of each pixel-space attack per ε of its threat model.

    ``eps_linf`` (on the [0, 1] pixel scale, e.g. 8/255) applies to L∞ attacks only, ``eps_l2`` (the
    L2 norm of the whole perturbation) to L2 attacks only; attacks of other kinds (embedding, text,
    blank image) keep their own settings. An empty list leaves the attacks of that norm as they are.
    """
    out: list[Attack] = []
    for attack in attacks:
        threat = getattr(attack.config, "norm", None) or getattr(attack, "threat", "")  # APGD, Square: a norm field
        values = {"linf": eps_linf, "l2": eps_l2}.get(threat)
        if values:
            out += [attack.with_eps(e) for e in values]
        else:
            out.append(attack)
    return out


def attack_eps(attack: Attack) -> float | None:
    eps = getattr(attack.config, "eps", None)
    return float(eps) if eps is not None else None


def gold_targets(examples: Sequence[Example], candidates: Sequence[str], task: str) -> torch.Tensor:
    """(B,) index of each example's gold candidate: the candidate with the best answer score against the
    example's answers (first in candidate order on ties), or -100 where no candidate scores above 0."""
    out = []
    for example in examples:
        scores = [answer_score(c, example.answers, task) for c in candidates]
        best = max(range(len(candidates)), key=lambda i: (scores[i], -i))
        out.append(best if scores[best] > 0 else -100)
    return torch.tensor(out, dtype=torch.long)


class ImageBank:
    """Images decoded once per (example, size) and kept as uint8 up to ``max_bytes`` (beyond that, decoded on
    each use); ``pixels(examples, size)`` -> (B, 3, size, size) floats in [0, 1]. One bank serves every member
    and attack setting of a dataset, and every round of a growing sample."""

    def __init__(self, max_bytes: int = 2 << 30) -> None:
        self.max_bytes = max_bytes
        self.held = 0
        self._decoded: dict[tuple[str, int], torch.Tensor] = {}

    def pixels(self, examples: Sequence[Example], size: int) -> torch.Tensor:
        missing = [e for e in {e.id: e for e in examples}.values() if (e.id, size) not in self._decoded]
        fresh = {}
        for start in range(0, len(missing), 256):
            chunk = missing[start:start + 256]
            decoded = (to_tensor([e.image for e in chunk], size) * 255).round().to(torch.uint8)
            fresh.update({e.id: image for e, image in zip(chunk, decoded)})
        for example_id, image in fresh.items():
            if self.held + image.numel() <= self.max_bytes:
                self._decoded[(example_id, size)] = image
                self.held += image.numel()
        rows = [self._decoded.get((e.id, size), fresh.get(e.id)) for e in examples]
        return torch.stack(rows).float() / 255.0 if rows else torch.zeros(0, 3, size, size)


@dataclass(frozen=True)
class CleanAnswer:
    """A member's clean answer to one example: candidate index, text, score in [0, 1], correct or not."""

    index: int
    prediction: str
    score: float
    correct: bool


@torch.no_grad()
def clean_answers(model, examples: Sequence[Example], images: ImageBank, task: str, batch_size: int
                  ) -> dict[str, CleanAnswer]:
    """Each example's clean answer by ``model`` (one forward pass per example), keyed by example id."""
    out = {}
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        pixels = images.pixels(chunk, model.image_size).to(model.device)
        best = model.candidate_scores(pixels, [e.text for e in chunk]).argmax(dim=1).tolist()
        for example, index in zip(chunk, best):
            prediction = model.candidates[index]
            score = answer_score(prediction, example.answers, task)
            out[example.id] = CleanAnswer(index, prediction, score, is_correct(score))
    return out


def evaluate(
    pair: ModelPair,
    dataset: Dataset,
    attacks: Sequence[Attack],
    *,
    batch_size: int = 32,
    seed: int = 0,
    run: str = "run",
    store: RecordStore | None = None,
    progress: Progress | None = None,
):
    """Attack both members of ``pair`` on every example of ``dataset``; return the Summary.

    With a ``store``, records already there are kept (resume) and new ones are appended
    batch by batch; without one nothing touches the filesystem.
    """
    from robustmm.summary import summarize

    existing = store.load() if store is not None else []
    records = run_attacks(pair, dataset, attacks, batch_size=batch_size, seed=seed, run=run, store=store,
                          existing=existing, progress=progress)
    return summarize(records, seed=seed)


def run_attacks(
    pair: ModelPair,
    dataset: Dataset,
    attacks: Sequence[Attack],
    *,
    batch_size: int,
    seed: int,
    run: str,
    store: RecordStore | None,
    existing: Sequence[AttackRecord],
    progress: Progress | None = None,
    images: ImageBank | None = None,
    ranks=None,
    batch_sizes: dict | None = None,
    protected: frozenset[str] = frozenset(),
    adversarial=None,
    third: tuple[str, object] | None = None,
) -> list[AttackRecord]:
    """The records of ``dataset`` (stored ones first), computing whichever are missing.

    ``images`` reuses an :class:`ImageBank` of the dataset's examples. In a torchrun job (``ranks``) this
    process computes only its share: every ``world``-th example, from position ``rank``, of those that miss
    a record (all members and attacks of an example on one rank). On CUDA out-of-memory a batch is halved
    and retried; the sizes used are noted in ``batch_sizes`` ({attack key: size}). ``protected``: the
    dataset's label-bearing words, which text attacks never edit (computed once from the whole split,
    :func:`robustmm.attacks.text.protect.protected_words`). With ``adversarial`` (a
    :class:`robustmm.transfer.AdversarialStore`) the white-box pixel attacks' perturbations are kept and every
    transfer record is computed too (each member's adversarial images on the other member, and on ``third``
    = (member name, model) if given).
    """
    from robustmm.transfer import transfer_records, transfer_units

    from robustmm.distributed import shard

    scope = f"{dataset.task.value}/{dataset.name}"
    wanted = {e.id for e in dataset.examples}
    ours = [r for r in existing if f"{r.task}/{r.dataset}" == scope and r.example_id in wanted]
    done = {r.key for r in ours}
    if progress is not None and (ranks is None or ranks.main):  # what is already stored, then each finished batch
        for r in ours:
            progress(r.member, r.attack_key, 1)
    images = images or ImageBank()
    task = dataset.task.value
    covered = {attack.key(): {e.id for e in dataset.examples if attack.covers(seed, e.id)} for attack in attacks}
    models = dict(pair.members()) | (dict([third]) if third is not None else {})
    transfers = transfer_units(attacks, list(models)) if adversarial is not None else []
    needy = [e.id for e in dataset.examples
             if any(e.id in covered[a.key()] and (scope, m, a.key(), e.id) not in done for m in pair.members() for a in attacks)
             or any(e.id in covered[a.key()] and (scope, t, k, e.id) not in done for t, k, a in transfers)]
    mine = shard(needy, ranks)
    for member, model in pair.members().items():
        missing = {attack.key(): [e for e in dataset.examples if e.id in mine and e.id in covered[attack.key()]
                                  and (scope, member, attack.key(), e.id) not in done] for attack in attacks}
        needed = {e.id: e for todo in missing.values() for e in todo}
        if not needed:
            continue
        clean = clean_answers(model, [e for e in dataset.examples if e.id in needed], images, task, batch_size)
        for attack in attacks:
            todo = missing[attack.key()]
            skipped = [e for e in todo if not clean[e.id].correct]
            if skipped:
                new = [_record(run, dataset, member, model, attack, e, clean[e.id], None) for e in skipped]
                _store(store, new, ours, progress, member, attack)
            attackable = [e for e in todo if clean[e.id].correct]
            size, start = batch_size, 0
            while start < len(attackable):
                chunk = attackable[start:start + size]
                try:
                    new = attack_batch(model, member, attack, chunk, dataset, run, clean, images, seed, protected,
                                       adversarial if attack.white_box else None)
                except torch.cuda.OutOfMemoryError:
                    if size == 1:
                        raise RobustMMError(f"CUDA ran out of memory attacking one example with {attack.key()}; use a "
                                            "smaller model dtype (--dtype bf16), --gradient-checkpointing or a larger GPU.") from None
                    torch.cuda.empty_cache()
                    size = max(1, size // 2)
                    log.warning("CUDA out of memory under %s: batch size halved to %d", attack.key(), size)
                    if batch_sizes is not None:
                        batch_sizes[attack.key()] = size
                    continue
                _store(store, new, ours, progress, member, attack)
                start += len(chunk)
    if transfers:
        new = transfer_records(models, dataset, attacks, [e for e in dataset.examples if e.id in mine], images, adversarial,
                               done, run, batch_size, seed)
        if store is not None:
            store.append(new)
        ours += new
    return ours


def _store(store: RecordStore | None, new: list[AttackRecord], ours: list[AttackRecord], progress, member: str,
           attack: Attack) -> None:
    if store is not None:
        store.append(new)
    ours += new
    if progress is not None:
        progress(member, attack.key(), len(new))


def attack_batch(model, member: str, attack: Attack, examples: Sequence[Example], dataset: Dataset, run: str,
                 clean: dict[str, CleanAnswer], images: ImageBank, seed: int,
                 protected: frozenset[str] = frozenset(), adversarial=None) -> list[AttackRecord]:
    """Attack ``examples`` (all answered correctly clean by ``model``) and return one record each; with
    ``adversarial`` (an AdversarialStore) the perturbations are kept for transfer."""
    device = model.device
    pixels = images.pixels(examples, model.image_size).to(device)
    texts = [e.text for e in examples]
    targets = gold_targets(examples, model.candidates, dataset.task.value).to(device)
    result = attack.run(model, AttackBatch(list(examples), pixels, texts, targets, seed=seed, protected=protected))
    if adversarial is not None:
        adversarial.save(dataset.name, attack.key(), member, [e.id for e in examples], result.pixels.to(pixels.device) - pixels)
    best = result.scores.argmax(dim=1).tolist()
    records = []
    for i, example in enumerate(examples):
        outcome = _Adversarial(model.candidates[best[i]], result.texts[i], dict(result.info[i]))
        records.append(_record(run, dataset, member, model, attack, example, clean[example.id], outcome))
    return records


@dataclass(frozen=True)
class _Adversarial:
    prediction: str
    text: str
    info: dict


def _record(run: str, dataset: Dataset, member: str, model, attack: Attack, example: Example, clean: CleanAnswer,
            adversarial: _Adversarial | None) -> AttackRecord:
    """The record of one example; ``adversarial`` None = not attacked (wrong clean: SKIPPED)."""
    task = dataset.task.value
    if adversarial is None:
        adv_prediction, adv_text, adv_score, status, facts = clean.prediction, example.text, clean.score, Status.SKIPPED, {}
    else:
        adv_prediction, adv_text, facts = adversarial.prediction, adversarial.text, adversarial.info
        adv_score = answer_score(adv_prediction, example.answers, task)
        status = Status.FAILED if is_correct(adv_score) else Status.SUCCEEDED
    details = dict(facts.get("details") or {})
    if facts.get("label") not in (None, "gold"):
        details["label"] = facts["label"]  # what the attack moved away from, when not the gold answer
    return AttackRecord(
        run=run, task=task, dataset=dataset.name, member=member, model=model.info.name,
        attack=attack.name, attack_key=attack.key(), modality=attack.modality, eps=attack_eps(attack),
        example_id=example.id, answers=tuple(example.answers), text=example.text, adv_text=adv_text,
        clean_prediction=clean.prediction, adv_prediction=adv_prediction, clean_score=clean.score, adv_score=adv_score,
        status=status, linf=_opt_float(facts.get("linf")), l2=_opt_float(facts.get("l2")),
        words_changed=_opt_int(facts.get("words_changed")), words_total=_opt_int(facts.get("words_total")),
        similarity=_opt_float(facts.get("similarity")), unknown_substitutions=_opt_int(facts.get("unknown_substitutions")),
        image_rms=_opt_float(facts.get("image_rms")), text_rms=_opt_float(facts.get("text_rms")),
        queries=int(facts.get("queries", 0)), seconds=float(facts.get("seconds", 0.0)), details=details,
    )


def _opt_float(value) -> float | None:
    return None if value is None else float(value)


def _opt_int(value) -> int | None:
    return None if value is None else int(value)
