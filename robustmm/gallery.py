"""A few adversarial examples as pictures for the report, rebuilt from the records after a run.

For each (dataset, attack setting, member) the first ``per_attack`` examples (in the dataset's
order) that the attack broke are attacked again (a record is a pure function of its settings and
example, so this reproduces the adversarial input exactly) and saved as one PNG strip: clean image |
adversarial image | perturbation magnified (scaled so its largest absolute value fills the range),
with an entry in ``gallery.jsonl`` holding the clean and adversarial text and answers. Because the
choice comes from the records, the gallery is the same whatever batch size, resume point or number
of processes made them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import torch

from robustmm.errors import RobustMMError
from robustmm.files import read_json_lines
from robustmm.types import AttackRecord, Status

PER_ATTACK = 2


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80]


class Gallery:
    """The ``gallery/`` folder of a run: ``gallery.jsonl`` plus one PNG strip per entry."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.index = self.folder / "gallery.jsonl"

    def entries(self) -> list[dict]:
        """The saved examples' entries; a corrupt index is one sentence (it can be deleted: the gallery is optional)."""
        if not self.index.exists():
            return []
        try:
            entries = read_json_lines(self.index, "Gallery index")
        except RobustMMError as err:
            raise RobustMMError(f"{err} Delete {self.index} (the gallery is optional) and rerun.") from err
        needed = ("dataset", "attack_key", "member", "image", "text", "adv_text", "clean_prediction", "adv_prediction")
        for number, entry in enumerate(entries, start=1):
            if not all(isinstance(entry.get(k), str) for k in needed):
                raise RobustMMError(f"Entry {number} of gallery index {self.index} lacks {', '.join(needed)}; delete the "
                                    "file (the gallery is optional) and rerun.")
        return entries

    def rebuild(self, pairs_by_dataset: dict, datasets: Sequence, attacks: Sequence, records: Sequence[AttackRecord],
                images, seed: int) -> None:
        """Write the gallery afresh from ``records`` (see the module docstring); replaces any earlier one."""
        from robustmm.evaluate import gold_targets
        from robustmm.attacks.base import AttackBatch

        chosen: dict[tuple, list[AttackRecord]] = defaultdict(list)
        order = {(d.name, e.id): i for d in datasets for i, e in enumerate(d.examples)}
        for r in sorted(records, key=lambda r: order.get((r.dataset, r.example_id), 0)):
            key = (r.dataset, r.attack_key, r.member)
            if r.status is Status.SUCCEEDED and len(chosen[key]) < PER_ATTACK:
                chosen[key].append(r)
        fresh = self.folder.with_name(self.folder.name + f".new{os.getpid()}")
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir(parents=True)
        entries = []
        examples = {(d.name, e.id): e for d in datasets for e in d.examples}
        by_key = {a.key(): a for a in attacks}
        for (dataset, attack_key, member), picked in sorted(chosen.items()):
            attack, pair = by_key.get(attack_key), pairs_by_dataset.get(dataset)
            if attack is None or pair is None:
                continue
            model = pair.members()[member]
            chunk = [examples[(dataset, r.example_id)] for r in picked]
            pixels = images.pixels(chunk, model.image_size).to(model.device)
            targets = gold_targets(chunk, model.candidates, picked[0].task).to(model.device)
            result = attack.run(model, AttackBatch(chunk, pixels, [e.text for e in chunk], targets, seed=seed))
            for i, record in enumerate(picked):
                name = f"{_slug(dataset)}-{_slug(attack_key)}-{member}-{_slug(record.example_id)}.png"
                _save_strip(fresh / name, pixels[i], result.pixels[i].to(pixels.device))
                entries.append({"dataset": dataset, "task": record.task, "attack_key": attack_key, "member": member,
                                "example_id": record.example_id, "image": name, "text": record.text,
                                "adv_text": record.adv_text, "clean_prediction": record.clean_prediction,
                                "adv_prediction": record.adv_prediction, "answers": list(record.answers), "linf": record.linf})
        (fresh / "gallery.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
        old = self.folder.with_name(self.folder.name + f".old{os.getpid()}")
        if self.folder.exists():
            os.replace(self.folder, old)
        os.replace(fresh, self.folder)
        shutil.rmtree(old, ignore_errors=True)


def _save_strip(path: Path, clean: torch.Tensor, adversarial: torch.Tensor) -> None:
    """clean | adversarial | perturbation magnified, images (3, H, W) in [0, 1], as a PNG three times the size."""
    import numpy as np
    from PIL import Image

    delta = (adversarial - clean).float()
    scale = float(delta.abs().max())
    magnified = (0.5 + 0.5 * delta / scale) if scale > 0 else torch.full_like(delta, 0.5)
    strip = torch.cat([clean.float(), adversarial.float(), magnified], dim=2).clamp(0, 1)
    array = (strip.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array)
    image.resize((image.width * 3, image.height * 3), Image.NEAREST).save(path)
