"""A result sink that keeps a few adversarial examples as pictures for the report.

For each (dataset, attack configuration, member) the first ``per_attack`` examples the
attack succeeded on are saved as one PNG strip: clean image | adversarial image |
perturbation magnified (scaled so its largest absolute value fills the range), plus an
entry in ``gallery.jsonl`` with the clean and adversarial text and answers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from robustmm.errors import RobustMMError
from robustmm.files import read_json_lines
from robustmm.types import AttackRecord, Status


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80]


class Gallery:
    def __init__(self, folder: str | Path, per_attack: int = 2) -> None:
        self.folder = Path(folder)
        self.per_attack = per_attack
        self.index = self.folder / "gallery.jsonl"
        self.counts: dict[tuple, int] = {}
        for entry in self.entries():
            key = (entry.get("dataset"), entry.get("attack_key"), entry.get("member"))
            self.counts[key] = self.counts.get(key, 0) + 1

    def add(self, record: AttackRecord, clean: torch.Tensor, adversarial: torch.Tensor) -> None:
        """Save ``record``'s example if it succeeded and its slot is free; images (3, H, W) in [0, 1]."""
        key = (record.dataset, record.attack_key, record.member)
        if record.status is not Status.SUCCEEDED or self.counts.get(key, 0) >= self.per_attack:
            return
        import numpy as np
        from PIL import Image

        delta = (adversarial - clean).float()
        scale = float(delta.abs().max())
        magnified = (0.5 + 0.5 * delta / scale) if scale > 0 else torch.full_like(delta, 0.5)
        strip = torch.cat([clean.float(), adversarial.float(), magnified], dim=2).clamp(0, 1)
        array = (strip.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{_slug(record.dataset)}-{_slug(record.attack_key)}-{record.member}-{_slug(record.example_id)}.png"
        image = Image.fromarray(array)
        image = image.resize((image.width * 3, image.height * 3), Image.NEAREST)
        image.save(self.folder / name)
        entry = {"dataset": record.dataset, "task": record.task, "attack_key": record.attack_key, "member": record.member,
                 "example_id": record.example_id, "image": name, "text": record.text, "adv_text": record.adv_text,
                 "clean_prediction": record.clean_prediction, "adv_prediction": record.adv_prediction,
                 "answers": list(record.answers), "linf": record.linf}
        with open(self.index, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        self.counts[key] = self.counts.get(key, 0) + 1

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
