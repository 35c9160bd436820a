"""Transfer attacks: adversarial images crafted on one member, evaluated on the other (and on a third model).

A white-box attack that succeeds on one member only because the other's gradients are hard to
follow (gradient masking) shows up here: inputs crafted on the member that is easy to attack then
break the "robust" one. Nothing is recomputed: while the runner attacks, every white-box pixel
attack's adversarial perturbations are kept (:class:`AdversarialStore`, ``<run>/adversarial/``, float16
``adversarial - clean`` per example, compressed), and for each ordered (source, target) member pair the
target is scored on the source's adversarial images. Each gives one record per example:

- ``attack`` = ``transfer``, ``attack_key`` = ``transfer(attack=<source attack key>, from=<source member>)``,
  ``member`` = the target, ``eps`` = the source attack's budget, ``details["source_member"]``;
- its status follows the usual rule on the target's own clean answer (SKIPPED when the target is wrong
  clean; SUCCEEDED when the source's adversarial image makes it wrong).

The report shows, per white-box attack, the source -> target attack-success matrix on the examples
every model answers correctly (its diagonal is the white-box attack itself).
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from robustmm.errors import RobustMMError

TRANSFER = "transfer"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:40]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def transfer_key(source_key: str, source_member: str) -> str:
    return f"{TRANSFER}(attack={source_key}, from={source_member})"


class AdversarialStore:
    """``<run>/adversarial/``: per (dataset, attack key, member) and batch, one ``.npz`` with the example ids and
    their float16 perturbations (adversarial minus clean pixels, (B, 3, H, W)); written to a temporary name and
    renamed, so a killed run leaves whole files only."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _prefix(self, dataset: str, key: str, member: str) -> str:
        return f"{_slug(dataset)}__{_slug(key)}-{_digest(key)}__{member}__"

    def save(self, dataset: str, key: str, member: str, ids: Sequence[str], delta: torch.Tensor) -> None:
        import os

        import numpy as np

        self.folder.mkdir(parents=True, exist_ok=True)
        name = self._prefix(dataset, key, member) + _digest("\n".join(ids)) + ".npz"
        tmp = self.folder / f".{name}.tmp{os.getpid()}.npz"
        np.savez_compressed(tmp, ids=np.array(list(ids)), delta=delta.detach().cpu().to(torch.float16).numpy())
        os.replace(tmp, self.folder / name)

    def load(self, dataset: str, key: str, member: str) -> dict[str, torch.Tensor]:
        """{example id: (3, H, W) float32 perturbation} of every stored batch of (dataset, attack key, member)."""
        import numpy as np

        out: dict[str, torch.Tensor] = {}
        for path in sorted(self.folder.glob(self._prefix(dataset, key, member) + "*.npz")):
            with np.load(path) as data:
                for example_id, delta in zip(data["ids"].tolist(), data["delta"]):
                    out[str(example_id)] = torch.from_numpy(delta.astype(np.float32))
        return out


def transfer_units(attacks: Sequence, targets: Sequence[str]) -> list[tuple[str, str, object]]:
    """(target member, transfer key, source attack) of every transfer a run computes: each white-box attack, from
    each pair member to every other model in ``targets``."""
    return [(target, transfer_key(attack.key(), source), attack) for attack in attacks if attack.white_box
            for source in ("prompt", "finetune") for target in targets if target != source]


def transfer_records(models: dict, dataset, attacks: Sequence, examples: Sequence, images, store: AdversarialStore,
                     done: set, run: str, batch_size: int, seed: int) -> list:
    """The missing transfer records of ``examples`` (see the module docstring): ``models`` = {member: model} of
    every target (the pair's members and an optional third model); ``done`` = record keys already stored."""
    from robustmm.evaluate import _Adversarial, _record, clean_answers

    scope = f"{dataset.task.value}/{dataset.name}"
    task = dataset.task.value
    records, cleans = [], {}
    for target, key, attack in transfer_units(attacks, list(models)):
        source = key.rsplit("from=", 1)[1].rstrip(")")
        todo = [e for e in examples if attack.covers(seed, e.id) and (scope, target, key, e.id) not in done]
        if not todo:
            continue
        model = models[target]
        if target not in cleans:
            cleans[target] = clean_answers(model, list(examples), images, task, batch_size)
        deltas = store.load(dataset.name, attack.key(), source)
        records += _score(model, target, attack, key, source, todo, deltas, cleans[target], images, dataset, run,
                          batch_size, _Adversarial, _record)
    return records


@torch.no_grad()
def _score(model, target, attack, key, source, examples, deltas, clean, images, dataset, run, batch_size, adversarial_cls,
           make_record) -> list:
    """Records of ``target`` scored on the source's adversarial images of ``examples`` (clean where none is stored)."""
    from robustmm.attacks.base import canonical_key

    class _Transfer:  # what a record needs of an attack: name, key, modality, eps
        name, modality = TRANSFER, "image"

        def __init__(self):
            self.config = attack.config

        def key(self):
            return key

    stand_in = _Transfer()
    out = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        right = [e for e in chunk if clean[e.id].correct]
        predictions = {}
        if right:
            pixels = images.pixels(right, model.image_size)
            delta = torch.stack([deltas.get(e.id, torch.zeros_like(pixels[0])) for e in right])
            if delta.shape[-2:] != pixels.shape[-2:]:
                raise RobustMMError(f"{canonical_key(attack.name, attack.config)} perturbations are {tuple(delta.shape[-2:])} "
                                    f"pixels but {target} takes {tuple(pixels.shape[-2:])}: transfer needs models of one image size.")
            adversarial = (pixels + delta).clamp(0, 1).to(model.device)
            best = model.candidate_scores(adversarial, [e.text for e in right]).argmax(dim=1).tolist()
            predictions = {e.id: model.candidates[i] for e, i in zip(right, best)}
        for e in chunk:
            facts = {"details": {"source_member": source}}
            if e.id in deltas:
                flat = deltas[e.id].flatten()
                facts.update(linf=float(flat.abs().max()), l2=float(flat.norm()))
            outcome = adversarial_cls(predictions[e.id], e.text, facts) if e.id in predictions else None
            record = make_record(run, dataset, target, model, stand_in, e, clean[e.id], outcome)
            if outcome is None:  # wrong clean: skipped, but say whose images it would have seen
                record = replace(record, details={"source_member": source})
            out.append(record)
    return out


def transfer_lines(records: Sequence, labels: dict[str, str]) -> list[str]:
    """Markdown: per white-box attack, the source -> target attack-success matrix on the examples every model
    involved answers correctly clean (rows: where the images were crafted; columns: the model attacked; the
    diagonal is the white-box attack itself). ``labels``: {member: name} of the models, in column order."""
    from robustmm.metrics import is_correct
    from robustmm.report import md_escape, percent

    rows_of: dict[tuple[str, str], dict[str, object]] = defaultdict(dict)
    for r in records:
        rows_of[(r.attack_key, r.member)][r.example_id] = r
    source_keys = sorted({r.attack_key.split("attack=", 1)[1].rsplit(", from=", 1)[0] for r in records if r.attack == TRANSFER})
    lines: list[str] = []
    for source_key in source_keys:
        cells = {(source, target): rows_of.get((source_key if source == target else transfer_key(source_key, source), target), {})
                 for source in ("prompt", "finetune") for target in labels}
        ids = set.intersection(*({i for i, r in rows.items() if is_correct(r.clean_score)} for rows in cells.values()))
        if not ids:
            continue
        lines += [f"`{md_escape(source_key)}` on the {len(ids)} examples every model answers correctly: share broken (%)", "",
                  "| images crafted on ↓ / attacked model → | " + " | ".join(labels.values()) + " |",
                  "|---|" + "---|" * len(labels)]
        for source in ("prompt", "finetune"):
            shares = [sum(not is_correct(cells[(source, t)][i].adv_score) for i in ids) / len(ids) for t in labels]
            lines.append(f"| {labels[source]} | " + " | ".join(percent(x) for x in shares) + " |")
        lines.append("")
    return lines
