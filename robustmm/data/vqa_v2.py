"""VQA v2 in its official file format.

Expected under ``root``:
- ``v2_OpenEnded_mscoco_<split>_questions.json``: ``{"questions": [{"question_id", "image_id", "question"}, ...]}``
- ``v2_mscoco_<split>_annotations.json``: ``{"annotations": [{"question_id", "image_id",
  "answers": [{"answer", "answer_id", ...} x10], "multiple_choice_answer", ...}, ...]}``
- COCO images ``COCO_<split>_<12-digit image id>.jpg`` in ``images`` (default: ``root/<split>``,
  then ``root/images``, then ``root``).

The answer-candidate list is a ``candidates`` file (one answer per line, or a JSON list,
e.g. the usual top-3129 answers), or else the ``top_k`` most frequent
``multiple_choice_answer`` values of the annotations (default 3129).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from robustmm.data.dataset import Dataset, register_dataset
from robustmm.errors import RobustMMError
from robustmm.files import read_json, read_text, text_field
from robustmm.types import Example, Task


def read_list(path: Path, key: str) -> list[dict]:
    """The list under ``key`` of an official JSON file, or a clear error."""
    data = read_json(path, "VQA v2 file")
    if not isinstance(data.get(key), list):
        raise RobustMMError(f"VQA v2 file {path} has no '{key}' list at its top level.")
    return data[key]


def image_folder(root: Path, split: str, images: str | Path | None) -> Path:
    if images is not None:
        folder = Path(images)
        if not folder.is_dir():
            raise RobustMMError(f"Image folder {folder} does not exist.")
        return folder
    for folder in (root / split, root / "images", root):
        if folder.is_dir() and any(folder.glob(f"COCO_{split}_*.jpg")):
            return folder
    raise RobustMMError(f"No COCO images COCO_{split}_<id>.jpg found in {root / split}, {root / 'images'} or {root}.")


def read_candidates(path: str | Path) -> tuple[str, ...]:
    path = Path(path)
    if not path.is_file():
        raise RobustMMError(f"Answer-candidate file {path} does not exist.")
    text = read_text(path, "Answer-candidate file")
    try:
        items = json.loads(text) if text.lstrip().startswith("[") else [line.strip() for line in text.splitlines()]
    except ValueError as err:
        raise RobustMMError(f"Answer-candidate file {path} is not a JSON list ({err}).") from err
    candidates = tuple(dict.fromkeys(str(item) for item in items if str(item).strip()))
    if not candidates:
        raise RobustMMError(f"Answer-candidate file {path} lists no answers.")
    return candidates


@register_dataset("vqa-v2", "VQA v2 official JSON files + COCO images (root=FOLDER); 10 human answers kept")
def load_vqa_v2(
    split: str = "val2014",
    root: str | Path | None = None,
    images: str | Path | None = None,
    candidates: str | Path | None = None,
    top_k: int = 3129,
    **_ignored,
) -> Dataset:
    if root is None:
        raise RobustMMError("vqa-v2 needs the folder of its official files: pass it as the dataset path or root=.")
    root = Path(root)
    if not root.is_dir():
        raise RobustMMError(f"VQA v2 folder {root} does not exist.")
    q_path = root / f"v2_OpenEnded_mscoco_{split}_questions.json"
    a_path = root / f"v2_mscoco_{split}_annotations.json"
    questions = read_list(q_path, "questions")
    annotations = read_list(a_path, "annotations")
    folder = image_folder(root, split, images)
    available = {p.name for p in folder.glob(f"COCO_{split}_*.jpg")}

    by_qid: dict[int, dict] = {}
    for ann in annotations:
        try:
            answers = tuple(text_field(a, "answer", f"An answer of question {ann.get('question_id')} in {a_path}")
                            for a in ann["answers"])
            by_qid[int(ann["question_id"])] = {"answers": answers, "mc": str(ann.get("multiple_choice_answer", ""))}
        except (KeyError, TypeError, ValueError) as err:
            raise RobustMMError(f"VQA v2 file {a_path} has an annotation without question_id/answers ({err}).") from err

    examples = []
    for q in questions:
        try:
            qid, image_id = int(q["question_id"]), int(q["image_id"])
        except (KeyError, TypeError, ValueError) as err:
            raise RobustMMError(f"VQA v2 file {q_path} has a question without question_id/image_id ({err}).") from err
        text = text_field(q, "question", f"Question {qid} in {q_path}")
        if qid not in by_qid:
            raise RobustMMError(f"Question {qid} in {q_path} has no annotation in {a_path}.")
        name = f"COCO_{split}_{image_id:012d}.jpg"
        if name not in available:
            raise RobustMMError(f"Image {name} for question {qid} is missing from {folder}.")
        examples.append(
            Example(
                id=f"vqa-v2/{split}/{qid}",
                image=folder / name,
                text=text,
                answers=by_qid[qid]["answers"],
                task=Task.VQA,
                meta={"question_id": qid, "image_id": image_id},
            )
        )
    if candidates is not None:
        answer_set = read_candidates(candidates)
    else:
        counts = Counter(entry["mc"] for entry in by_qid.values() if entry["mc"])
        answer_set = tuple(answer for answer, _ in counts.most_common(top_k))
    return Dataset("vqa-v2", split, Task.VQA, tuple(examples), answer_set)
