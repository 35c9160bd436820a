"""The dataset loaders: bundled easy-VQA / easy-VE, official-format VQA v2 / SNLI-VE, errors, images."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import (
    SNLI_VE_IMAGE_IDS,
    SNLI_VE_ROWS,
    VQA_V2_ROWS,
    make_jpeg,
    vqa_v2_image_name,
    write_snli_ve,
    write_vqa_v2,
)
from robustmm.data import Dataset, list_datasets, load_dataset, open_image, to_tensor
from robustmm.data import easy_ve, easy_vqa
from robustmm.errors import RobustMMError
from robustmm.types import VE_LABELS, Task

VQA_SPLIT = "val2014"


def q_file(root: Path, split: str = VQA_SPLIT) -> Path:
    return root / f"v2_OpenEnded_mscoco_{split}_questions.json"


def a_file(root: Path, split: str = VQA_SPLIT) -> Path:
    return root / f"v2_mscoco_{split}_annotations.json"


def load_vqa(root: Path, **options) -> Dataset:
    return load_dataset("vqa-v2", split=VQA_SPLIT, root=root, **options)


def assert_names(excinfo, *needles) -> None:
    """The RobustMMError's message names each of ``needles`` (a file, a folder or a value)."""
    message = str(excinfo.value)
    for needle in needles:
        assert str(needle) in message, f"{needle!s} not in error message: {message}"


# ---------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------


def test_list_datasets_names_all_four_with_descriptions():
    datasets = list_datasets()
    assert set(datasets) >= {"easy-vqa", "easy-ve", "vqa-v2", "snli-ve"}
    assert all(isinstance(text, str) and text for text in datasets.values())
    assert list(datasets) == sorted(datasets)


def test_unknown_dataset_name():
    with pytest.raises(RobustMMError) as excinfo:
        load_dataset("no-such-dataset")
    assert_names(excinfo, "no-such-dataset", "easy-vqa")


def test_missing_folder_path(tmp_path):
    missing = tmp_path / "not-there"
    with pytest.raises(RobustMMError) as excinfo:
        load_dataset(str(missing))
    assert_names(excinfo, missing)


def test_dataset_path_that_is_a_file(tmp_path):
    path = tmp_path / "questions.json"
    path.write_text("{}")
    with pytest.raises(RobustMMError) as excinfo:
        load_dataset(path)
    assert_names(excinfo, path)


def test_folder_of_unknown_format(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing official here")
    with pytest.raises(RobustMMError) as excinfo:
        load_dataset(tmp_path)
    assert_names(excinfo, tmp_path)


# ---------------------------------------------------------------------------
# easy-VQA
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def easy_vqa_test() -> Dataset:
    return load_dataset("easy-vqa", split="test")


def test_easy_vqa_test_split(easy_vqa_test):
    ds = easy_vqa_test
    assert (ds.name, ds.split, ds.task) == ("easy-vqa", "test", Task.VQA)
    assert len(ds) == 9673
    assert len(ds.candidates) == 13 and len(set(ds.candidates)) == 13
    assert {"yes", "no", "circle", "rectangle", "triangle", "red", "blue"} <= set(ds.candidates)
    first = ds[0]
    assert first.id == "easy-vqa/test/0"
    assert first.text == "what is the red shape?" and first.answers == ("triangle",)
    assert first.label == "triangle" and first.task is Task.VQA
    assert Path(first.image).name == "0.png" and Path(first.image).is_file()
    assert all(len(ex.answers) == 1 and ex.answers[0] in ds.candidates for ex in ds)
    assert len({ex.id for ex in ds}) == len(ds)


def test_easy_vqa_unknown_split():
    with pytest.raises(RobustMMError) as excinfo:
        load_dataset("easy-vqa", split="validation")
    assert_names(excinfo, "validation", "easy-vqa")


# ---------------------------------------------------------------------------
# easy-VE
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def easy_ve_splits() -> dict[str, Dataset]:
    return {split: load_dataset("easy-ve", split=split) for split in ("train", "test")}


def _true_facts(split: str) -> dict[int, dict[str, str]]:
    """Shape and colour of each image, read independently from easy-VQA's non-yes/no answers."""
    facts: dict[int, dict[str, str]] = {}
    for _question, answer, image_id in easy_vqa.read_questions(split):
        if answer in easy_ve.SHAPES:
            facts.setdefault(image_id, {})["shape"] = answer
        elif answer in easy_ve.COLORS:
            facts.setdefault(image_id, {})["color"] = answer
    return facts


@pytest.mark.parametrize("split", ["train", "test"])
def test_easy_ve_splits_are_balanced(easy_ve_splits, split):
    ds = easy_ve_splits[split]
    assert (ds.name, ds.split, ds.task) == ("easy-ve", split, Task.VE)
    assert ds.candidates == VE_LABELS
    assert len(ds) > 1000 and len(ds) % 3 == 0
    counts = Counter(ex.label for ex in ds)
    assert set(counts) == set(VE_LABELS)
    assert len(set(counts.values())) == 1  # exactly one hypothesis per class per image
    assert len({ex.id for ex in ds}) == len(ds)
    per_image = Counter(ex.meta["image_id"] for ex in ds)
    assert set(per_image.values()) == {3}
    assert all(Path(ex.image).parent == easy_vqa.data_root() / split / "images" for ex in ds[:30])


def test_easy_ve_cache_lives_under_robustmm_home(easy_ve_splits, robustmm_home):
    assert (robustmm_home / "easy-ve" / f"test-v{easy_ve.VERSION}.jsonl").is_file()
    assert (robustmm_home / "easy-ve" / f"train-v{easy_ve.VERSION}.jsonl").is_file()


def test_easy_ve_is_deterministic_across_fresh_homes(easy_ve_splits, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTMM_HOME", str(tmp_path / "fresh-home"))
    again = load_dataset("easy-ve", split="test")
    assert (tmp_path / "fresh-home" / "easy-ve" / f"test-v{easy_ve.VERSION}.jsonl").is_file()
    before = [(ex.id, ex.meta["image_id"], ex.text, ex.answers) for ex in easy_ve_splits["test"]]
    after = [(ex.id, ex.meta["image_id"], ex.text, ex.answers) for ex in again]
    assert before == after
    # and reading the cache back gives the same as generating it
    assert easy_ve.cached_rows("test") == easy_ve.generate("test")


def test_easy_ve_train_and_test_differ(easy_ve_splits):
    train_texts = [ex.text for ex in easy_ve_splits["train"][:300]]
    test_texts = [ex.text for ex in easy_ve_splits["test"][:300]]
    assert train_texts != test_texts


@pytest.mark.parametrize("split", ["train", "test"])
def test_easy_ve_hypotheses_agree_with_image_facts(easy_ve_splits, split):
    facts = _true_facts(split)
    examples = [ex for ex in easy_ve_splits[split] if ex.meta["image_id"] < 150]
    assert len(examples) >= 90
    checked = 0
    for ex in examples:
        truth = facts.get(ex.meta["image_id"], {})
        if set(truth) != {"shape", "color"}:
            continue  # the image's own non-yes/no answers do not reveal both: no independent check
        checked += 1
        words = ex.text.rstrip(".").split()
        shapes = [w for w in words if w in easy_ve.SHAPES]
        colors = [w for w in words if w in easy_ve.COLORS]
        assert len(shapes) <= 1 and len(colors) <= 1 and (shapes or colors), ex.text
        wrong = [s for s in shapes if s != truth["shape"]] + [c for c in colors if c != truth["color"]]
        if ex.label == "contradiction":
            assert wrong, f"contradiction is not false for {truth}: {ex.text!r}"
        else:  # entailment and neutral only say true things about shape/colour
            assert not wrong, f"{ex.label} says something false for {truth}: {ex.text!r}"
        if ex.label == "entailment":
            assert any(ex.text == t.format(**truth) for t in easy_ve.ENTAILMENT_TEMPLATES), ex.text
        if ex.label == "neutral":
            assert any(ex.text == t.format(**truth) for t in easy_ve.NEUTRAL_TEMPLATES), ex.text
    assert checked >= 0.5 * len(examples), (checked, len(examples))


def test_easy_ve_image_facts_reads_questions():
    rows = [
        ("what is the blue shape?", "circle", 1),
        ("is there not a red shape in the image?", "yes", 1),  # reveals nothing positive
        ("what color is the triangle?", "green", 2),
        ("does the image not contain a gray shape?", "no", 3),  # negated "no": gray is present
        ("is there a rectangle?", "yes", 3),
        ("is there a circle in the image?", "no", 4),  # nothing positive
    ]
    facts = easy_ve.image_facts(rows)
    assert facts[1] == {"shape": "circle", "color": "blue"}
    assert facts[2] == {"shape": "triangle", "color": "green"}
    assert facts[3] == {"shape": "rectangle", "color": "gray"}
    assert not facts.get(4)


def test_easy_ve_unknown_split():
    with pytest.raises(RobustMMError) as excinfo:
        load_dataset("easy-ve", split="dev")
    assert_names(excinfo, "dev", "easy-ve")


def test_easy_ve_corrupt_cache_names_file(easy_ve_splits, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTMM_HOME", str(tmp_path))
    path = tmp_path / "easy-ve" / f"test-v{easy_ve.VERSION}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text('{"image_id": 0, "hypothesis": "x", "label": "neutral"}\n{not json\n')
    with pytest.raises(RobustMMError) as excinfo:
        load_dataset("easy-ve", split="test")
    assert_names(excinfo, path)


# ---------------------------------------------------------------------------
# limit / seed
# ---------------------------------------------------------------------------


def test_subset_is_seeded_deterministic_and_order_preserving(easy_vqa_test):
    a = load_dataset("easy-vqa", split="test", limit=40, seed=7)
    b = load_dataset("easy-vqa", split="test", limit=40, seed=7)
    c = load_dataset("easy-vqa", split="test", limit=40, seed=8)
    assert len(a) == 40 and a.examples == b.examples
    assert [ex.id for ex in a] != [ex.id for ex in c]
    positions = [int(ex.id.rsplit("/", 1)[1]) for ex in a]
    assert positions == sorted(positions) and len(set(positions)) == 40
    assert all(easy_vqa_test[i] == ex for i, ex in zip(positions, a))
    assert positions != list(range(40))  # a random sample, not the head
    assert a.candidates == easy_vqa_test.candidates and (a.name, a.split, a.task) == ("easy-vqa", "test", Task.VQA)


def test_subset_without_seed_takes_the_head(easy_vqa_test):
    head = load_dataset("easy-vqa", split="test", limit=5, seed=None)
    assert head.examples == easy_vqa_test.examples[:5]


def test_subset_limit_edge_cases(easy_vqa_test):
    assert easy_vqa_test.subset(None) is easy_vqa_test
    assert easy_vqa_test.subset(len(easy_vqa_test) + 10) is easy_vqa_test
    with pytest.raises(RobustMMError, match="limit"):
        easy_vqa_test.subset(0)
    with pytest.raises(RobustMMError, match="limit"):
        load_dataset("easy-vqa", split="test", limit=-3)


# ---------------------------------------------------------------------------
# VQA v2 (official format)
# ---------------------------------------------------------------------------


def test_vqa_v2_loads_official_files(vqa_v2_dir):
    ds = load_vqa(vqa_v2_dir)
    assert (ds.name, ds.split, ds.task) == ("vqa-v2", VQA_SPLIT, Task.VQA)
    assert len(ds) == len(VQA_V2_ROWS) == 5
    # questions order is kept (annotations were written in reverse order)
    assert [ex.meta["question_id"] for ex in ds] == [row[0] for row in VQA_V2_ROWS]
    by_id = {ex.id: ex for ex in ds}
    cat = by_id["vqa-v2/val2014/42000"]
    assert cat.text == "What color is the cat?"
    assert cat.meta == {"question_id": 42000, "image_id": 42}
    assert cat.answers == tuple(["black"] * 6 + ["gray"] * 3 + ["dark gray"])
    assert cat.label == "black"
    assert Path(cat.image) == vqa_v2_dir / VQA_SPLIT / "COCO_val2014_000000000042.jpg"
    for ex, row in zip(ds, VQA_V2_ROWS):
        assert len(ex.answers) == 10 and ex.answers == tuple(row[6])
        assert Path(ex.image).name == vqa_v2_image_name(row[1]) and Path(ex.image).is_file()
    assert by_id["vqa-v2/val2014/1000000"].meta["image_id"] == 1000


def test_vqa_v2_candidates_from_annotations(vqa_v2_dir):
    # every multiple_choice_answer occurs once; the annotations file lists them (rows reversed)
    # as yes, pizza, no, 2, black, and Counter.most_common keeps first-seen order among ties.
    ds = load_vqa(vqa_v2_dir)
    assert set(ds.candidates) == {"black", "2", "no", "pizza", "yes"}
    assert ds.candidates == ("yes", "pizza", "no", "2", "black")  # ties keep annotation order
    assert load_vqa(vqa_v2_dir, top_k=2).candidates == ("yes", "pizza")


def test_vqa_v2_candidates_most_frequent_first(tmp_path):
    rows = list(VQA_V2_ROWS) + [(73002, 73, "Is the table wooden?", "is the", "yes/no", "no", ["no"] * 10)]
    ds = load_vqa(write_vqa_v2(tmp_path / "v", rows=rows), top_k=1)
    assert ds.candidates == ("no",)


def test_vqa_v2_candidates_file_lines_and_json(vqa_v2_dir, tmp_path):
    lines = tmp_path / "answers.txt"
    lines.write_text("yes\nno\n\n  2  \nyes\nblue\n")
    assert load_vqa(vqa_v2_dir, candidates=lines).candidates == ("yes", "no", "2", "blue")
    as_json = tmp_path / "answers.json"
    as_json.write_text(json.dumps(["red", "green", "red", 3]))
    assert load_vqa(vqa_v2_dir, candidates=str(as_json)).candidates == ("red", "green", "3")


@pytest.mark.parametrize("content", ["", "\n \n", "[]"])
def test_vqa_v2_empty_candidates_file(vqa_v2_dir, tmp_path, content):
    path = tmp_path / "answers.txt"
    path.write_text(content)
    with pytest.raises(RobustMMError) as excinfo:
        load_vqa(vqa_v2_dir, candidates=path)
    assert_names(excinfo, path)


def test_vqa_v2_missing_or_bad_candidates_file(vqa_v2_dir, tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(RobustMMError) as excinfo:
        load_vqa(vqa_v2_dir, candidates=missing)
    assert_names(excinfo, missing)
    bad = tmp_path / "bad.json"
    bad.write_text('["yes", "no"')
    with pytest.raises(RobustMMError) as excinfo:
        load_vqa(vqa_v2_dir, candidates=bad)
    assert_names(excinfo, bad)


def test_vqa_v2_loaded_by_folder_path(vqa_v2_dir):
    by_path = load_dataset(str(vqa_v2_dir), split=VQA_SPLIT)
    assert by_path.name == "vqa-v2"
    assert by_path.examples == load_vqa(vqa_v2_dir).examples
    assert load_dataset(vqa_v2_dir, split=VQA_SPLIT).name == "vqa-v2"  # a Path works too


def test_vqa_v2_images_in_images_folder_or_explicit(tmp_path):
    root = write_vqa_v2(tmp_path / "v", image_dir="images")
    ds = load_vqa(root)
    assert all(Path(ex.image).parent == root / "images" for ex in ds)
    other = tmp_path / "elsewhere"
    (root / "images").rename(other)
    ds = load_vqa(root, images=other)
    assert all(Path(ex.image).parent == other for ex in ds)
    with pytest.raises(RobustMMError) as excinfo:
        load_vqa(root, images=tmp_path / "no-images")
    assert_names(excinfo, tmp_path / "no-images")


def test_vqa_v2_subset(vqa_v2_dir):
    full = load_vqa(vqa_v2_dir)
    part = load_dataset(vqa_v2_dir, split=VQA_SPLIT, limit=3, seed=1)
    assert len(part) == 3 and part.examples == load_dataset(vqa_v2_dir, split=VQA_SPLIT, limit=3, seed=1).examples
    order = [full.examples.index(ex) for ex in part]
    assert order == sorted(order)
    assert part.candidates == full.candidates


def test_vqa_v2_missing_folder(tmp_path):
    missing = tmp_path / "vqa"
    with pytest.raises(RobustMMError) as excinfo:
        load_vqa(missing)
    assert_names(excinfo, missing)
    with pytest.raises(RobustMMError, match="vqa-v2"):
        load_dataset("vqa-v2", split=VQA_SPLIT)  # no root at all


def test_vqa_v2_missing_questions_file(vqa_v2_dir):
    q_file(vqa_v2_dir).unlink()
    with pytest.raises(RobustMMError) as excinfo:
        load_vqa(vqa_v2_dir)
    assert_names(excinfo, q_file(vqa_v2_dir))


def test_vqa_v2_missing_annotations_file(vqa_v2_dir):
    a_file(vqa_v2_dir).unlink()
    with pytest.raises(RobustMMError) as excinfo:
        load_dataset(vqa_v2_dir, split=VQA_SPLIT)
    assert_names(excinfo, a_file(vqa_v2_dir))


def test_vqa_v2_unknown_split(vqa_v2_dir):
    with pytest.raises(RobustMMError) as excinfo:
        load_dataset("vqa-v2", split="test2015", root=vqa_v2_dir)
    assert_names(excinfo, q_file(vqa_v2_dir, "test2015"))


@pytest.mark.parametrize(
    "which, content",
    [
        ("questions", "[]"),  # top level a list
        ("questions", '{"questions": {"question_id": 1}}'),  # not a list
        ("questions", '{"questions": [1, 2'),  # not JSON
        ("annotations", '[{"question_id": 1}]'),
        ("annotations", '{"annotation": []}'),  # misspelt key
    ],
)
def test_vqa_v2_wrong_top_level_schema(vqa_v2_dir, which, content):
    path = q_file(vqa_v2_dir) if which == "questions" else a_file(vqa_v2_dir)
    path.write_text(content)
    with pytest.raises(RobustMMError) as excinfo:
        load_vqa(vqa_v2_dir)
    assert_names(excinfo, path)


@pytest.mark.parametrize("missing_key", ["question_id", "image_id", "question"])
def test_vqa_v2_question_without_required_field(vqa_v2_dir, missing_key):
    data = json.loads(q_file(vqa_v2_dir).read_text())
    del data["questions"][1][missing_key]
    q_file(vqa_v2_dir).write_text(json.dumps(data))
    with pytest.raises(RobustMMError) as excinfo:
        load_vqa(vqa_v2_dir)
    assert_names(excinfo, q_file(vqa_v2_dir))


@pytest.mark.parametrize("missing_key", ["question_id", "answers"])
def test_vqa_v2_annotation_without_required_field(vqa_v2_dir, missing_key):
    data = json.loads(a_file(vqa_v2_dir).read_text())
    del data["annotations"][0][missing_key]
    a_file(vqa_v2_dir).write_text(json.dumps(data))
    with pytest.raises(RobustMMError) as excinfo:
        load_vqa(vqa_v2_dir)
    assert_names(excinfo, a_file(vqa_v2_dir))


def test_vqa_v2_question_without_annotation(vqa_v2_dir):
    data = json.loads(a_file(vqa_v2_dir).read_text())
    data["annotations"] = [ann for ann in data["annotations"] if ann["question_id"] != 73001]
    a_file(vqa_v2_dir).write_text(json.dumps(data))
    with pytest.raises(RobustMMError) as excinfo:
        load_vqa(vqa_v2_dir)
    assert_names(excinfo, "73001", a_file(vqa_v2_dir))


def test_vqa_v2_image_id_without_image_file(vqa_v2_dir):
    name = vqa_v2_image_name(73)
    (vqa_v2_dir / VQA_SPLIT / name).unlink()
    with pytest.raises(RobustMMError) as excinfo:
        load_vqa(vqa_v2_dir)
    assert_names(excinfo, name)


def test_vqa_v2_no_images_at_all(vqa_v2_dir):
    for path in (vqa_v2_dir / VQA_SPLIT).iterdir():
        path.unlink()
    with pytest.raises(RobustMMError) as excinfo:
        load_vqa(vqa_v2_dir)
    assert_names(excinfo, vqa_v2_dir)


def test_vqa_v2_empty_dataset(vqa_v2_dir):
    data = json.loads(q_file(vqa_v2_dir).read_text())
    data["questions"] = []
    q_file(vqa_v2_dir).write_text(json.dumps(data))
    with pytest.raises(RobustMMError) as excinfo:
        load_dataset(vqa_v2_dir, split=VQA_SPLIT)
    assert_names(excinfo, "no examples", vqa_v2_dir)


def test_vqa_v2_corrupt_image(vqa_v2_dir):
    ds = load_vqa(vqa_v2_dir)
    image = Path(ds[0].image)
    image.write_bytes(b"this is not a jpeg at all \x00\x01\x02" * 10)
    with pytest.raises(RobustMMError) as excinfo:
        open_image(ds[0].image)
    assert_names(excinfo, image)
    with pytest.raises(RobustMMError) as excinfo:
        to_tensor([ds[2].image, ds[0].image], size=16)
    assert_names(excinfo, image)


def test_vqa_v2_truncated_image(vqa_v2_dir):
    ds = load_vqa(vqa_v2_dir)
    image = Path(ds[2].image)
    image.write_bytes(image.read_bytes()[:40])  # a JPEG header and nothing else
    with pytest.raises(RobustMMError) as excinfo:
        open_image(image)
    assert_names(excinfo, image)


# ---------------------------------------------------------------------------
# SNLI-VE (official format)
# ---------------------------------------------------------------------------


def snli_file(root: Path, split: str = "test") -> Path:
    return root / f"snli_ve_{split}.jsonl"


def test_snli_ve_loads_official_files(snli_ve_dir):
    ds = load_dataset("snli-ve", split="test", root=snli_ve_dir)
    assert (ds.name, ds.split, ds.task) == ("snli-ve", "test", Task.VE)
    assert ds.candidates == VE_LABELS
    assert len(ds) == len(SNLI_VE_ROWS) == 5
    for ex, (image_id, _premise, hypothesis, label, suffix) in zip(ds, SNLI_VE_ROWS):
        assert ex.id == f"snli-ve/test/{image_id}.jpg#2{suffix}"
        assert ex.text == hypothesis and ex.answers == (label,) and ex.label == label
        assert ex.meta == {"image_id": image_id}
        assert Path(ex.image) == snli_ve_dir / "flickr30k_images" / f"{image_id}.jpg"
    assert Counter(ex.label for ex in ds) == Counter({"entailment": 2, "neutral": 2, "contradiction": 1})
    assert {ex.meta["image_id"] for ex in ds} == set(SNLI_VE_IMAGE_IDS)


def test_snli_ve_loaded_by_folder_path(snli_ve_dir):
    ds = load_dataset(str(snli_ve_dir))  # default split "test"
    assert ds.name == "snli-ve" and len(ds) == 5
    assert load_dataset(snli_ve_dir, limit=2, seed=0).examples == load_dataset(snli_ve_dir, limit=2, seed=0).examples


def test_snli_ve_numeric_ids_blank_lines_and_no_pair_id(tmp_path):
    root = tmp_path / "s"
    write_snli_ve(root, image_dir="images")
    path = snli_file(root)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["Flickr30K_ID"] = int(rows[0]["Flickr30K_ID"])  # ids are sometimes numbers
    del rows[1]["pairID"]
    path.write_text(json.dumps(rows[0]) + "\n\n" + "\n".join(json.dumps(r) for r in rows[1:]) + "\n\n")
    ds = load_dataset(root)
    assert len(ds) == 5
    assert ds[0].meta["image_id"] == "3416050480"
    assert ds[1].id == "snli-ve/test/3"  # no pairID: the line number (blank line 2 counted)
    assert Path(ds[0].image).parent == root / "images"


def test_snli_ve_unknown_label(snli_ve_dir):
    path = snli_file(snli_ve_dir)
    lines = path.read_text().splitlines()
    row = json.loads(lines[2])
    row["gold_label"] = "-"  # SNLI's "no consensus" marker
    lines[2] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RobustMMError) as excinfo:
        load_dataset(snli_ve_dir)
    assert_names(excinfo, path, "Line 3", "'-'")


@pytest.mark.parametrize("bad_line", ['{"Flickr30K_ID": "3416050480", "sentence2": "x"}', "{not json", "[1, 2, 3]"])
def test_snli_ve_malformed_record(snli_ve_dir, bad_line):
    path = snli_file(snli_ve_dir)
    path.write_text(path.read_text() + bad_line + "\n")
    with pytest.raises(RobustMMError) as excinfo:
        load_dataset("snli-ve", root=snli_ve_dir)
    assert_names(excinfo, path, "Line 6")


def test_snli_ve_missing_file_and_unknown_split(snli_ve_dir):
    with pytest.raises(RobustMMError) as excinfo:
        load_dataset("snli-ve", split="dev", root=snli_ve_dir)
    assert_names(excinfo, snli_file(snli_ve_dir, "dev"))
    snli_file(snli_ve_dir).unlink()
    with pytest.raises(RobustMMError) as excinfo:
        load_dataset("snli-ve", root=snli_ve_dir)
    assert_names(excinfo, snli_file(snli_ve_dir))


def test_snli_ve_missing_folder(tmp_path):
    missing = tmp_path / "snli"
    with pytest.raises(RobustMMError) as excinfo:
        load_dataset("snli-ve", root=missing)
    assert_names(excinfo, missing)


def test_snli_ve_image_id_without_image_file(snli_ve_dir):
    (snli_ve_dir / "flickr30k_images" / "1000092795.jpg").unlink()
    with pytest.raises(RobustMMError) as excinfo:
        load_dataset(snli_ve_dir)
    assert_names(excinfo, "1000092795.jpg", snli_file(snli_ve_dir))


def test_snli_ve_empty_dataset(snli_ve_dir):
    snli_file(snli_ve_dir).write_text("\n")
    with pytest.raises(RobustMMError) as excinfo:
        load_dataset(snli_ve_dir)
    assert_names(excinfo, "no examples", snli_ve_dir)


def test_snli_ve_corrupt_image(snli_ve_dir):
    ds = load_dataset(snli_ve_dir)
    image = Path(ds[0].image)
    image.write_bytes(b"\xff\xd8\xff garbage bytes, not a picture" * 4)
    with pytest.raises(RobustMMError) as excinfo:
        open_image(ds[0].image)
    assert_names(excinfo, image)
    with pytest.raises(RobustMMError) as excinfo:
        to_tensor([ds[0].image], size=8)
    assert_names(excinfo, image)


# ---------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------


def test_open_image_missing_file(tmp_path):
    missing = tmp_path / "gone.jpg"
    with pytest.raises(RobustMMError) as excinfo:
        open_image(missing)
    assert_names(excinfo, missing)


def test_open_image_converts_to_rgb(tmp_path):
    from PIL import Image

    gray = Image.new("L", (5, 7), 128)
    assert open_image(gray).mode == "RGB"
    path = tmp_path / "rgba.png"
    Image.new("RGBA", (6, 4), (10, 20, 30, 40)).save(path)
    image = open_image(str(path))
    assert image.mode == "RGB" and image.size == (6, 4)


def test_to_tensor_shape_and_range(easy_vqa_test, tmp_path):
    import torch
    from PIL import Image

    jpeg = make_jpeg(tmp_path / "x.jpg", size=(30, 20))
    pil = Image.new("RGB", (32, 32), (255, 255, 255))
    batch = to_tensor([easy_vqa_test[0].image, str(jpeg), pil], size=32)
    assert batch.shape == (3, 3, 32, 32)
    assert batch.dtype == torch.float32 and batch.is_contiguous()
    assert float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0
    assert torch.allclose(batch[2], torch.ones(3, 32, 32))  # white -> exactly 1
    assert float(batch[0].std()) > 0  # a real picture, not a constant
    small = to_tensor([easy_vqa_test[1].image], size=16)
    assert small.shape == (1, 3, 16, 16)
    # the 64x64 easy-VQA image at its own size is not resized: values are pixel/255 exactly
    native = to_tensor([easy_vqa_test[0].image], size=64)
    import numpy as np

    expected = torch.from_numpy(np.asarray(Image.open(easy_vqa_test[0].image).convert("RGB"), dtype=np.float32))
    assert torch.allclose(native[0].permute(1, 2, 0), expected / 255.0)
