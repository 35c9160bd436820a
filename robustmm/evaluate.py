"""The runner: attack both models of a pair on the same examples, one record per
(model, attack, eps, example), streamed to a RecordStore and resumable.

Batches are a fixed partition of the dataset in order, and every batch's random state is
seeded from (seed, member, attack, batch index), so a resumed run produces exactly the
records of an uninterrupted one (timings aside). A batch counts as done only when all of
its records are stored; records of a partially stored batch are dropped and redone.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from typing import Callable, Sequence

import torch

from robustmm.attacks.base import Attack, AttackBatch
from robustmm.data.dataset import Dataset
from robustmm.data.images import to_tensor
from robustmm.metrics import answer_score
from robustmm.models.pair import ModelPair
from robustmm.records import RecordStore
from robustmm.types import AttackRecord, Status

log = logging.getLogger(__name__)

Progress = Callable[[str, str, int], None]  # (member, attack_key, examples just finished)


def expand_eps(attacks: Sequence[Attack], eps_values: Sequence[float] | None) -> list[Attack]:
    """One copy of each pixel-space (image / joint) attack per ε in ``eps_values``.

    Embedding and text attacks keep their own settings (their ε, if any, is on another scale).
    """
    if not eps_values:
        return list(attacks)
    out: list[Attack] = []
    for attack in attacks:
        has_eps = any(f.name == "eps" for f in dataclasses.fields(attack.config))
        if attack.modality in ("image", "joint") and has_eps:
            out += [type(attack)(config=dataclasses.replace(attack.config, eps=float(e))) for e in eps_values]
        else:
            out.append(attack)
    return out


def attack_eps(attack: Attack) -> float | None:
    eps = getattr(attack.config, "eps", None)
    return float(eps) if eps is not None else None


def _batch_seed(seed: int, *parts: object) -> int:
    return zlib.crc32("/".join(str(p) for p in (seed, *parts)).encode()) & 0x7FFFFFFF


def _seed_everything(value: int) -> None:
    torch.manual_seed(value)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(value)


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
    return summarize(records)


def run_attacks(
    pair: ModelPair,
    dataset: Dataset,
    attacks: Sequence[Attack],
    *,
    batch_size: int,
    seed: int,
    run: str,
    store: RecordStore | None,
    existing: list[AttackRecord],
    progress: Progress | None = None,
    gallery=None,
) -> list[AttackRecord]:
    """The records of this dataset (existing ones first), running whatever is missing."""
    scope = f"{dataset.task.value}/{dataset.name}"
    done = {r.key: r for r in existing}
    plan = []  # (member, model, attack, batch index, examples)
    partial: set[tuple] = set()
    for member, model in pair.members().items():
        for attack in attacks:
            key = attack.key()
            for index, start in enumerate(range(0, len(dataset), batch_size)):
                chunk = dataset.examples[start : start + batch_size]
                stored = [(scope, member, key, e.id) in done for e in chunk]
                if all(stored):
                    continue
                if any(stored):
                    partial |= {(scope, member, key, e.id) for e in chunk}
                plan.append((member, model, attack, index, chunk))
    if partial and store is not None:
        log.info("dropping %d records of partially stored batches", len(partial))
        existing = [r for r in existing if r.key not in partial]
        store.rewrite(existing)
    ours = [r for r in existing if f"{r.task}/{r.dataset}" == scope]
    if progress is not None:  # report what is already stored, then each finished batch
        for r in ours:
            progress(r.member, r.attack_key, 1)
    for member, model, attack, index, chunk in plan:
        _seed_everything(_batch_seed(seed, scope, member, attack.key(), index))
        new = attack_batch(model, member, attack, chunk, dataset, run, gallery, seed)
        if store is not None:
            store.append(new)
        ours += new
        if progress is not None:
            progress(member, attack.key(), len(chunk))
    return ours


def gold_targets(examples, candidates: Sequence[str], task: str) -> torch.Tensor:
    """(B,) index of each example's gold candidate: the candidate with the best answer score against the
    example's answers (first in candidate order on ties), or -100 where no candidate scores above 0."""
    out = []
    for example in examples:
        scores = [answer_score(c, example.answers, task) for c in candidates]
        best = max(range(len(candidates)), key=lambda i: (scores[i], -i))
        out.append(best if scores[best] > 0 else -100)
    return torch.tensor(out, dtype=torch.long)


def attack_batch(model, member: str, attack: Attack, examples, dataset: Dataset, run: str, gallery=None,
                 seed: int = 0) -> list[AttackRecord]:
    """Clean prediction, attack on the examples the model gets right, one record each.

    ``gallery`` (optional, a :class:`robustmm.gallery.Gallery`) receives succeeded examples' images.
    """
    device = model.device
    pixels = to_tensor([e.image for e in examples], model.image_size).to(device)
    texts = [e.text for e in examples]
    with torch.no_grad():
        clean_index = model.candidate_scores(pixels, texts).argmax(dim=1)
    clean_pred = [model.candidates[i] for i in clean_index.tolist()]
    clean_scores = [answer_score(p, e.answers, dataset.task.value) for p, e in zip(clean_pred, examples)]
    todo = [i for i, s in enumerate(clean_scores) if s > 0]
    adv_pred, adv_text, info = list(clean_pred), list(texts), [dict() for _ in examples]
    adv_pixels = pixels
    if todo:
        start = time.perf_counter()
        gold = gold_targets([examples[i] for i in todo], model.candidates, dataset.task.value).to(device)
        batch = AttackBatch([examples[i] for i in todo], pixels[todo], [texts[i] for i in todo], gold, seed=seed)
        result = attack.run(model, batch)
        elapsed = (time.perf_counter() - start) / len(todo)
        adv_index = result.scores.argmax(dim=1).tolist()
        adv_pixels = pixels.clone()
        adv_pixels[todo] = result.pixels.detach().to(pixels.dtype)
        for j, i in enumerate(todo):
            adv_pred[i], adv_text[i] = model.candidates[adv_index[j]], result.texts[j]
            info[i] = dict(result.info[j]) if j < len(result.info) else {}
            info[i].setdefault("seconds", elapsed)
    records = []
    for i, example in enumerate(examples):
        adv_score = answer_score(adv_pred[i], example.answers, dataset.task.value) if i in todo else clean_scores[i]
        if clean_scores[i] <= 0:
            status = Status.SKIPPED
        elif adv_pred[i] != clean_pred[i] and adv_score < clean_scores[i]:
            status = Status.SUCCEEDED
        else:
            status = Status.FAILED
        facts = info[i]
        records.append(AttackRecord(
            run=run, task=dataset.task.value, dataset=dataset.name, member=member, model=model.info.name,
            attack=attack.name, attack_key=attack.key(), modality=attack.modality, eps=attack_eps(attack),
            example_id=example.id, answers=tuple(example.answers), text=texts[i], adv_text=adv_text[i],
            clean_prediction=clean_pred[i], adv_prediction=adv_pred[i], clean_score=clean_scores[i], adv_score=adv_score,
            status=status, linf=_opt_float(facts.get("linf")), l2=_opt_float(facts.get("l2")),
            words_changed=_opt_int(facts.get("words_changed")), words_total=_opt_int(facts.get("words_total")),
            similarity=_opt_float(facts.get("similarity")), unknown_substitutions=_opt_int(facts.get("unknown_substitutions")),
            image_rms=_opt_float(facts.get("image_rms")), text_rms=_opt_float(facts.get("text_rms")),
            queries=int(facts.get("queries", 0)), seconds=float(facts.get("seconds", 0.0)),
        ))
        if gallery is not None:
            gallery.add(records[-1], pixels[i], adv_pixels[i])
    return records


def _opt_float(value) -> float | None:
    return None if value is None else float(value)


def _opt_int(value) -> int | None:
    return None if value is None else int(value)
