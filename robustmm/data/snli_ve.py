"""SNLI-VE in its official file format.

Expected under ``root``: ``snli_ve_<split>.jsonl`` (one JSON object a line with at least
``Flickr30K_ID``, ``sentence2`` (the hypothesis) and ``gold_label`` in
entailment / neutral / contradiction; ``pairID`` is used as the example id when present)
and Flickr30k images ``<Flickr30K_ID>.jpg`` in ``images`` (default: ``root/flickr30k_images``,
then ``root/images``, then ``root``).
"""

from __future__ import annotations

from pathlib import Path

from robustmm.data.dataset import Dataset, register_dataset
from robustmm.errors import RobustMMError
from robustmm.files import read_json_lines, text_field
from robustmm.types import VE_LABELS, Example, Task


def image_folder(root: Path, images: str | Path | None) -> Path:
    if images is not None:
        folder = Path(images)
        if not folder.is_dir():
            raise RobustMMError(f"Image folder {folder} does not exist.")
        return folder
    for folder in (root / "flickr30k_images", root / "images", root):
        if folder.is_dir() and any(folder.glob("*.jpg")):
            return folder
    raise RobustMMError(f"No Flickr30k images <id>.jpg found in {root / 'flickr30k_images'}, {root / 'images'} or {root}.")


@register_dataset("snli-ve", "SNLI-VE official jsonl + Flickr30k images (root=FOLDER)")
def load_snli_ve(split: str = "test", root: str | Path | None = None, images: str | Path | None = None, **_ignored) -> Dataset:
    if root is None:
        raise RobustMMError("snli-ve needs the folder of its official files: pass it as the dataset path or root=.")
    root = Path(root)
    path = root / f"snli_ve_{split}.jsonl"
    if not path.is_file():
        raise RobustMMError(f"SNLI-VE file {path} does not exist.")
    folder = image_folder(root, images)
    available = {p.name for p in folder.glob("*.jpg")}
    examples = []
    for number, row in read_json_lines(path, "SNLI-VE file", numbered=True):
        where = f"Line {number} of {path}"
        image_id, text, label = (text_field(row, k, where) for k in ("Flickr30K_ID", "sentence2", "gold_label"))
        if label not in VE_LABELS:
            raise RobustMMError(f"{where} has unknown gold_label {label!r} (expected {', '.join(VE_LABELS)}).")
        name = f"{image_id}.jpg"
        if name not in available:
            raise RobustMMError(f"Image {name} for line {number} of {path} is missing from {folder}.")
        examples.append(
            Example(
                id=f"snli-ve/{split}/{row.get('pairID', number)}",
                image=folder / name,
                text=text,
                answers=(label,),
                task=Task.VE,
                meta={"image_id": image_id},
            )
        )
    return Dataset("snli-ve", split, Task.VE, tuple(examples), VE_LABELS)
