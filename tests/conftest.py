"""Shared fixtures: a private ROBUSTMM_HOME, tiny VQA v2 / SNLI-VE folders in the official formats, tiny random
VLM checkpoints, and one torch thread for the modules that build HF models.

Nothing here touches the network: the official-format folders are written from scratch
into ``tmp_path`` (small JPEGs made with PIL).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Set before any robustmm import can read it, so generated caches (easy-VE, ...) never go to ~.
# The session fixture below then points it at a pytest-managed folder.
_IMPORT_HOME = tempfile.mkdtemp(prefix="robustmm-home-")
os.environ["ROBUSTMM_HOME"] = _IMPORT_HOME


@pytest.fixture(scope="session", autouse=True)
def robustmm_home(tmp_path_factory) -> Path:
    """A fresh ``ROBUSTMM_HOME`` for the whole test session (restored afterwards)."""
    previous = os.environ.get("ROBUSTMM_HOME")
    home = tmp_path_factory.mktemp("robustmm_home")
    os.environ["ROBUSTMM_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("ROBUSTMM_HOME", None)
    else:
        os.environ["ROBUSTMM_HOME"] = previous
    shutil.rmtree(_IMPORT_HOME, ignore_errors=True)


def make_jpeg(path: Path, color=(200, 30, 30), size=(24, 16)) -> Path:
    """Write a small solid-colour JPEG (with one dark square, so it is not constant)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, color)
    image.paste((10, 10, 10), (2, 2, 8, 8))
    image.save(path, format="JPEG")
    return path


# ---------------------------------------------------------------------------
# VQA v2 (official: v2_OpenEnded_mscoco_<split>_questions.json, v2_mscoco_<split>_annotations.json,
# COCO images COCO_<split>_<12-digit id>.jpg)
# ---------------------------------------------------------------------------

# (question_id, image_id, question, question_type, answer_type, multiple_choice_answer, 10 human answers)
VQA_V2_ROWS = [
    (42000, 42, "What color is the cat?", "what color is the", "other", "black",
     ["black"] * 6 + ["gray"] * 3 + ["dark gray"]),
    (42001, 42, "How many cats are there?", "how many", "number", "2",
     ["2"] * 8 + ["two"] * 2),
    (73000, 73, "Is it raining?", "is it", "yes/no", "no", ["no"] * 10),
    (73001, 73, "What is on the table?", "what is on the", "other", "pizza",
     ["pizza"] * 7 + ["food"] * 2 + ["pizza slice"]),
    (1000000, 1000, "Is this outdoors?", "is this", "yes/no", "yes", ["yes"] * 9 + ["no"]),
]
VQA_V2_IMAGE_IDS = (42, 73, 1000)


def vqa_v2_image_name(image_id: int, split: str = "val2014") -> str:
    return f"COCO_{split}_{image_id:012d}.jpg"


def write_vqa_v2(root: Path, split: str = "val2014", rows=VQA_V2_ROWS, image_dir: str | None = None) -> Path:
    """Write an official-format VQA v2 folder under ``root``; images go to ``root/<image_dir or split>``."""
    root.mkdir(parents=True, exist_ok=True)
    questions = {
        "info": {"description": "tiny VQA v2 test fixture", "version": "2.0", "year": 2017},
        "task_type": "Open-Ended",
        "data_type": "mscoco",
        "license": {"url": "http://creativecommons.org/licenses/by/4.0/", "name": "Creative Commons Attribution 4.0 International License"},
        "data_subtype": split,
        "questions": [{"image_id": image_id, "question": text, "question_id": qid} for qid, image_id, text, *_ in rows],
    }
    annotations = {
        "info": questions["info"],
        "license": questions["license"],
        "data_subtype": split,
        "data_type": "mscoco",
        # Annotations in a different order from the questions: the loader must join on question_id.
        "annotations": [
            {
                "question_id": qid,
                "image_id": image_id,
                "question_type": qtype,
                "answer_type": atype,
                "multiple_choice_answer": mc,
                "answers": [
                    {"answer": answer, "answer_confidence": "yes" if i % 3 else "maybe", "answer_id": i + 1}
                    for i, answer in enumerate(answers)
                ],
            }
            for qid, image_id, _text, qtype, atype, mc, answers in reversed(rows)
        ],
    }
    (root / f"v2_OpenEnded_mscoco_{split}_questions.json").write_text(json.dumps(questions))
    (root / f"v2_mscoco_{split}_annotations.json").write_text(json.dumps(annotations))
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    for index, image_id in enumerate(sorted({row[1] for row in rows})):
        make_jpeg(root / (image_dir or split) / vqa_v2_image_name(image_id, split), colors[index % len(colors)])
    return root


@pytest.fixture
def vqa_v2_dir(tmp_path) -> Path:
    """A folder holding a 5-question VQA v2 ``val2014`` split over 3 COCO images."""
    return write_vqa_v2(tmp_path / "vqa_v2")


# ---------------------------------------------------------------------------
# SNLI-VE (official: snli_ve_<split>.jsonl + Flickr30k images <Flickr30K_ID>.jpg)
# ---------------------------------------------------------------------------

# (Flickr30K_ID, premise caption, hypothesis, gold_label, pairID suffix)
SNLI_VE_ROWS = [
    ("3416050480", "A young girl in a pink shirt climbs a rope.", "A girl is climbing.", "entailment", "r1e"),
    ("3416050480", "A young girl in a pink shirt climbs a rope.", "The girl is at a gym class.", "neutral", "r1n"),
    ("3416050480", "A young girl in a pink shirt climbs a rope.", "The girl is sleeping in bed.", "contradiction", "r1c"),
    ("1000092795", "Two young guys with shaggy hair look at their hands.", "Two men are outside.", "neutral", "r2n"),
    ("1000092795", "Two young guys with shaggy hair look at their hands.", "Two people are present.", "entailment", "r2e"),
]
SNLI_VE_IMAGE_IDS = ("3416050480", "1000092795")


def snli_ve_record(image_id, premise, hypothesis, label, suffix) -> dict:
    return {
        "Flickr30K_ID": image_id,
        "sentence1": premise,
        "sentence2": hypothesis,
        "gold_label": label,
        "pairID": f"{image_id}.jpg#2{suffix}",
        "captionID": f"{image_id}.jpg#2",
    }


def write_snli_ve(root: Path, split: str = "test", rows=SNLI_VE_ROWS, image_dir: str = "flickr30k_images") -> Path:
    """Write an official-format SNLI-VE folder under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(snli_ve_record(*row)) for row in rows]
    (root / f"snli_ve_{split}.jsonl").write_text("\n".join(lines) + "\n")
    for index, image_id in enumerate(sorted({row[0] for row in rows})):
        make_jpeg(root / image_dir / f"{image_id}.jpg", [(90, 140, 200), (220, 120, 40)][index % 2])
    return root


@pytest.fixture
def snli_ve_dir(tmp_path) -> Path:
    """A folder holding a 5-pair SNLI-VE ``test`` split over 2 Flickr30k images."""
    return write_snli_ve(tmp_path / "snli_ve")


# ---------------------------------------------------------------------------
# Tiny built-in models (random weights, seconds to build) for attack and model tests
# ---------------------------------------------------------------------------

TINY_VQA_CANDIDATES = ("circle", "rectangle", "triangle", "red", "blue", "green", "teal", "yes", "no")


def build_tiny_model(task: str = "vqa", seed: int = 0, prompts=None):
    """A randomly initialised UnifiedVLM (dim 32, 1+1 layers) in eval mode, for fast tests."""
    import torch

    from robustmm.models.lexicon import load_lexicon, load_tokenizer, vocab_file
    from robustmm.models.unified import UnifiedBackbone, UnifiedConfig, UnifiedVLM
    from robustmm.types import VE_LABELS, Task

    torch.manual_seed(seed)
    table, _ = load_lexicon()
    config = UnifiedConfig(dim=32, heads=2, encoder_layers=1, decoder_layers=1, stem_channels=(8, 16, 16))
    backbone = UnifiedBackbone(config, table).eval()
    candidates = TINY_VQA_CANDIDATES if task == "vqa" else VE_LABELS
    model = UnifiedVLM(backbone, load_tokenizer(vocab_file()), Task(task), candidates, prompts).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture
def tiny_vqa_model():
    return build_tiny_model("vqa")


@pytest.fixture
def tiny_ve_model():
    return build_tiny_model("ve")


def _tiny_recipe_parts():
    from robustmm.models.unified import UnifiedConfig
    from robustmm.tuning import StageConfig

    return (UnifiedConfig(dim=32, heads=2, encoder_layers=1, decoder_layers=1, stem_channels=(8, 16, 16)),
            StageConfig(epochs=1, lr=1e-3, batch_size=16, limit=48))


TINY, TINY_STAGE = _tiny_recipe_parts()


@pytest.fixture(scope="session")
def tiny_pair_dir(tmp_path_factory) -> Path:
    """A tiny recipe run on disk: base/, easy-vqa/{finetune,prompt}/ (a few training steps each)."""
    from dataclasses import replace

    from robustmm.models.prompts import PromptConfig
    from robustmm.tuning import Recipe, finetune, pretrain, prompt_tune

    out = tmp_path_factory.mktemp("tiny_pair")
    pretrain(Recipe(model=TINY, pretrain=replace(TINY_STAGE, limit=64)), out / "base")
    finetune(out / "base", "easy-vqa", out / "easy-vqa" / "finetune", TINY_STAGE)
    prompt_tune(out / "base", "easy-vqa", out / "easy-vqa" / "prompt", PromptConfig(length=4), replace(TINY_STAGE, lr=0.03))
    return out


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (other jobs share this machine's two cores); the count is restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_vlm(tmp_path_factory, family: str, seed: int = 0) -> Path:
    """The session's tiny random ``family`` folders (model/, prompt/, lora/; ``robustmm make-tiny``), built on first use."""
    from robustmm.models.vlm.tiny import make_tiny

    root = tmp_path_factory.getbasetemp() / "tiny-vlm" / (family if seed == 0 else f"{family}-seed{seed}")
    if not (root / "README.md").is_file():
        make_tiny(family, root, seed=seed)
    return root
