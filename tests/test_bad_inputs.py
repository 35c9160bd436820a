"""Bad input a user can cause, across CLI options, dataset files, checkpoints, presets and run folders.

Every case must end with exit code 2, one or two lines on stderr naming the problem, no traceback,
and the run folder unchanged (or absent). The CLI runs in-process (``robustmm.cli.main`` with a
patched ``sys.argv``), which is what the console script runs, so a case costs no interpreter start.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from conftest import make_jpeg, write_snli_ve, write_vqa_v2
from robustmm import cli
from robustmm.errors import RobustMMError

DEFAULT = Path(__file__).resolve().parents[1] / "robustmm" / "checkpoints" / "default"


def run_cli(args: list[str], capsys, monkeypatch) -> tuple[int, str]:
    """Exit code and stderr of ``robustmm ARGS`` run in this process."""
    monkeypatch.setattr(sys, "argv", ["robustmm", *map(str, args)])
    code = 0
    try:
        cli.main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    return code, capsys.readouterr().err


def folder_state(folder: Path) -> dict:
    """Every file under ``folder`` with a digest of its bytes ({} when absent); the run lock's bookkeeping file
    ``.lock`` (who holds the folder) is left out."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def assert_refused(args, capsys, monkeypatch, message: str, watched: Path | None = None) -> str:
    before = folder_state(watched) if watched is not None else None
    code, err = run_cli(args, capsys, monkeypatch)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, f"exit {code}, stderr: {err}"
    assert "Traceback" not in err and 1 <= len(lines) <= 2, err
    assert message.lower() in " ".join(err.split()).lower(), err
    if watched is not None:
        assert folder_state(watched) == before, "the run folder changed"
    return err


# ---------------------------------------------------------------------------
# robustmm attack: options (refused before any model is loaded)
# ---------------------------------------------------------------------------

FGSM = ["--attack", "fgsm"]
OPTION_CASES = [
    (["--attack", "nonsense"], "Unknown attack"),
    (["--attack", "fgsm:speed=3"], "no parameter 'speed'"),
    (["--attack", "fgsm:eps"], "not of the form key=value"),
    (["--attack", "fgsm:eps=eight"], "must be a number"),
    (["--attack", "fgsm:eps=1/0"], "must be a number"),
    (["--attack", "fgsm:eps=-1"], "eps"),
    (["--attack", "fgsm:eps=2"], "did you mean 2/255"),
    (["--attack", "fgsm:eps=nan"], "must be a number"),
    (["--attack", "pgd-linf:steps=0"], "steps must be at least 1"),
    (["--attack", "pgd-linf:steps=2.5"], "whole number"),
    (["--attack", "pgd-linf:alpha=-1"], "alpha"),
    (["--attack", "pgd-linf:random_start=maybe"], "true or false"),
    (["--attack", "fgsm:targeted=true,target="], "no target"),
    (["--attack", "embed-fgsm:target=pixels"], "target must be one of"),
    (["--attack", "blank-image:gray=2"], "gray"),
    (["--attack", "word-sub:min_similarity=2"], "min_similarity"),
    (["--attack", "word-sub:max_words_fraction=0"], "max_words_fraction"),
    (["--attack", "word-sub:wir=random"], "wir must be one of"),
    ([*FGSM, "--eps", "eight"], "eps"),
    ([*FGSM, "--eps", "0"], "--eps is an L∞ budget"),
    ([*FGSM, "--eps", "300/255"], "--eps is an L∞ budget"),
    ([*FGSM, "--eps-l2", "-1"], "--eps-l2"),
    ([*FGSM, "--eps-l2", "inf"], "eps-l2 must be a number"),
    ([*FGSM, "--seed", "-1"], "seed must be"),
    ([*FGSM, "--seed", str(2**63)], "seed must be"),
    ([*FGSM, "--limit", "0"], "limit must be at least 1"),
    ([*FGSM, "--limit", "-5"], "limit must be at least 1"),
    ([*FGSM, "--batch-size", "0"], "batch size must be at least 1"),
    ([*FGSM, "--precision", "0"], "precision"),
    ([*FGSM, "--precision", "1.5"], "precision"),
    ([*FGSM, "--name", ".."], "single folder name"),
    ([*FGSM, "--name", "../../escape"], "single folder name"),
    ([*FGSM, "--name", "a/b"], "single folder name"),
    ([*FGSM, "--name", ""], "single folder name"),
    ([*FGSM, "--device", "gpu"], "Unknown device"),
    ([*FGSM, "--preset", "nonexistent"], "Unknown attack preset"),
    ([*FGSM, "--preset", "missing/file.toml"], "does not exist"),
    ([*FGSM, "-d", "nonexistent-dataset"], "Unknown dataset"),
    ([*FGSM, "--pair", "other"], "Unknown pair"),
    ([*FGSM, "--split", "validation", "-d", "easy-vqa"], "splits train, test"),
    ([*FGSM, "-d", "easy-vqa", "-d", "easy-vqa"], "given twice"),
    ([*FGSM, "--dtype", "fp8"], "dtype"),
]


@pytest.mark.parametrize("args, message", OPTION_CASES, ids=[" ".join(a) for a, _ in OPTION_CASES])
def test_attack_options(args, message, tmp_path, capsys, monkeypatch):
    out = tmp_path / "runs"
    assert_refused(["attack", *args, "--out", out], capsys, monkeypatch, message)
    assert not list(out.glob("*/report.md")) and not list(out.glob("*/records.jsonl"))


def test_cuda_without_a_gpu(tmp_path, capsys, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_refused(["attack", *FGSM, "--device", "cuda", "--out", tmp_path], capsys, monkeypatch, "no CUDA GPU")


# ---------------------------------------------------------------------------
# Dataset files
# ---------------------------------------------------------------------------


def _snli(tmp_path, mutate) -> Path:
    root = write_snli_ve(tmp_path / "snli")
    mutate(root / "snli_ve_test.jsonl", root)
    return root


def _vqa(tmp_path, mutate) -> Path:
    root = write_vqa_v2(tmp_path / "vqa")
    mutate(root, root / "v2_OpenEnded_mscoco_val2014_questions.json", root / "v2_mscoco_val2014_annotations.json")
    return root


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


SNLI_CASES = {
    "not utf-8": (lambda f, r: f.write_bytes(b'{"sentence2": "caf\xe9"}\n'), "not UTF-8"),
    "not json": (lambda f, r: f.write_text("{not json\n"), "not valid JSON"),
    "a json list": (lambda f, r: f.write_text("[1, 2]\n"), "not a JSON object"),
    "null hypothesis": (lambda f, r: f.write_text(f.read_text().replace('"A girl is climbing."', "null")), "no text in 'sentence2'"),
    "empty hypothesis": (lambda f, r: f.write_text(f.read_text().replace('"A girl is climbing."', '"  "')), "no text in 'sentence2'"),
    "no label": (lambda f, r: f.write_text(f.read_text().replace('"gold_label"', '"label"')), "no text in 'gold_label'"),
    "unknown label": (lambda f, r: f.write_text(f.read_text().replace('"neutral"', '"unknown"', 1)), "unknown gold_label"),
    "image missing": (lambda f, r: next((r / "flickr30k_images").glob("1000092795.jpg")).unlink(), "is missing from"),
    "duplicate pair id": (lambda f, r: f.write_text(f.read_text().replace("#2r1n", "#2r1e")), "two examples with id"),
    "empty file": (lambda f, r: f.write_text(""), "has no examples"),
    "no images": (lambda f, r: shutil.rmtree(r / "flickr30k_images"), "No Flickr30k images"),
}


@pytest.mark.parametrize("case", SNLI_CASES, ids=list(SNLI_CASES))
def test_snli_ve_files(case, tmp_path, capsys, monkeypatch):
    mutate, message = SNLI_CASES[case]
    root = _snli(tmp_path, mutate)
    assert_refused(["attack", *FGSM, "-d", root, "--out", tmp_path / "runs"], capsys, monkeypatch, message)


VQA_CASES = {
    "questions not utf-8": (lambda r, q, a: q.write_bytes(b'{"questions": ["\xff"]}'), "not UTF-8"),
    "annotations not json": (lambda r, q, a: a.write_text("{"), "not valid JSON"),
    "questions a list": (lambda r, q, a: q.write_text("[]"), "must hold a JSON object"),
    "no questions list": (lambda r, q, a: _edit_json(q, lambda d: d.pop("questions")), "no 'questions' list"),
    "null question": (lambda r, q, a: _edit_json(q, lambda d: d["questions"][0].update(question=None)), "no text in 'question'"),
    "question without id": (lambda r, q, a: _edit_json(q, lambda d: d["questions"][0].pop("question_id")), "without question_id"),
    "null answer": (lambda r, q, a: _edit_json(a, lambda d: d["annotations"][0]["answers"][0].update(answer=None)), "no text in 'answer'"),
    "question without annotation": (lambda r, q, a: _edit_json(a, lambda d: d["annotations"].pop()), "has no annotation"),
    "duplicate question id": (lambda r, q, a: _edit_json(q, lambda d: d["questions"].append(dict(d["questions"][0]))), "two examples with id"),
    "image missing": (lambda r, q, a: next((r / "val2014").glob("*000000000042.jpg")).unlink(), "is missing from"),
}
IMAGE_CASES = {
    "empty": (lambda p: p.write_bytes(b""), "is empty"),
    "truncated": (lambda p: _truncate(p), "unreadable or corrupt"),
    "not an image": (lambda p: p.write_text("text"), "unreadable or corrupt"),
    "too large": (lambda p: _huge_jpeg(p), "too large"),
    "large but under Pillow's limit": (lambda p: _big_png(p), "too large"),
}


@pytest.mark.parametrize("case", IMAGE_CASES, ids=list(IMAGE_CASES))
def test_image_files(case, tmp_path):
    from robustmm.data.images import to_tensor

    path = make_jpeg(tmp_path / "image.jpg")
    mutate, message = IMAGE_CASES[case]
    mutate(path)
    with pytest.raises(RobustMMError, match=message):
        to_tensor([path], 64)


def _truncate(path: Path) -> None:
    make_jpeg(path, size=(200, 200))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _big_png(path: Path) -> None:
    """8000 x 8000 pixels (64 M): Pillow opens it, robustmm refuses it before decoding."""
    from PIL import Image

    Image.new("1", (8000, 8000)).save(path, format="PNG")


def _huge_jpeg(path: Path) -> None:
    """A valid JPEG header of 14000 x 14000 pixels (196 M): refused before any decoding."""
    from PIL import Image

    Image.new("L", (14000, 14000)).save(path, format="JPEG", quality=1)


@pytest.mark.parametrize("case", VQA_CASES, ids=list(VQA_CASES))
def test_vqa_v2_files(case, tmp_path, capsys, monkeypatch):
    mutate, message = VQA_CASES[case]
    root = _vqa(tmp_path, mutate)
    args = ["attack", *FGSM, "-d", root, "--split", "val2014", "--limit", "5", "--out", tmp_path / "runs",
            "--prompt-tuned", DEFAULT / "easy-vqa" / "prompt", "--finetuned", DEFAULT / "easy-vqa" / "finetune"]
    assert_refused(args, capsys, monkeypatch, message)


@pytest.mark.parametrize("content, message", [
    ("", "lists no answers"), ("[not json", "not a JSON list"), (b"\xff\xfe", "not UTF-8"),
])
def test_vqa_v2_candidate_files(content, message, tmp_path):
    from robustmm.data import load_dataset

    root = write_vqa_v2(tmp_path / "vqa")
    candidates = tmp_path / "answers.txt"
    candidates.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(RobustMMError, match=message):
        load_dataset(root, split="val2014", candidates=candidates)


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------


def _copy(tmp_path, member="easy-vqa/finetune") -> Path:
    target = tmp_path / "ckpt" / member.replace("/", "-")
    shutil.copytree(DEFAULT / member, target)
    return target


CHECKPOINT_CASES = {
    "missing folder": (lambda f: shutil.rmtree(f), "does not exist"),
    "no config": (lambda f: (f / "config.json").unlink(), "no config.json"),
    "config not json": (lambda f: (f / "config.json").write_text("{"), "not valid JSON"),
    "config not utf-8": (lambda f: (f / "config.json").write_bytes(b"\xff{}"), "not UTF-8"),
    "config a list": (lambda f: (f / "config.json").write_text("[]"), "config"),
    "foreign config": (lambda f: (f / "config.json").write_text('{"hello": 1}'), "neither a robustmm"),
    "weights missing": (lambda f: (f / "model.safetensors").unlink(), "does not exist"),
    "weights corrupt": (lambda f: (f / "model.safetensors").write_bytes(b"not safetensors"), "corrupt"),
    "string for a number": (lambda f: _edit_json(f / "config.json", lambda d: d["model"].update(dim="wide")), "model"),
    "unknown model key": (lambda f: _edit_json(f / "config.json", lambda d: d["model"].update(depth=3)), "model"),
    "no task": (lambda f: _edit_json(f / "config.json", lambda d: d.pop("task")), "task"),
}


@pytest.mark.parametrize("case", CHECKPOINT_CASES, ids=list(CHECKPOINT_CASES))
def test_finetuned_checkpoints(case, tmp_path, capsys, monkeypatch):
    mutate, message = CHECKPOINT_CASES[case]
    folder = _copy(tmp_path)
    mutate(folder)
    args = ["attack", *FGSM, "-d", "easy-vqa", "--limit", "2", "--out", tmp_path / "runs",
            "--prompt-tuned", DEFAULT / "easy-vqa" / "prompt", "--finetuned", folder]
    assert_refused(args, capsys, monkeypatch, message)


PROMPT_CASES = {
    "unknown prompt key": (lambda f: _edit_json(f / "config.json", lambda d: d["prompt"].update(colour="red")), "prompt"),
    "prompts corrupt": (lambda f: (f / "prompts.safetensors").write_bytes(b"\x00" * 10), "corrupt"),
    "base nowhere to be found": (lambda f: _edit_json(f / "config.json", lambda d: d["base"].update(sha256="0" * 64)), "--base"),
}


@pytest.mark.parametrize("case", PROMPT_CASES, ids=list(PROMPT_CASES))
def test_prompt_checkpoints(case, tmp_path, capsys, monkeypatch):
    mutate, message = PROMPT_CASES[case]
    folder = _copy(tmp_path, "easy-vqa/prompt")
    mutate(folder)
    args = ["attack", *FGSM, "-d", "easy-vqa", "--limit", "2", "--out", tmp_path / "runs",
            "--prompt-tuned", folder, "--finetuned", DEFAULT / "easy-vqa" / "finetune"]
    assert_refused(args, capsys, monkeypatch, message)


@pytest.mark.parametrize("prompt, finetune, message", [
    ("easy-vqa/finetune", "easy-vqa/finetune", "Expected a prompt-tuned and a finetuned"),
    ("easy-vqa/prompt", "easy-ve/finetune", "different answer set"),
    ("easy-ve/prompt", "easy-ve/finetune", "different answer set"),
])
def test_mismatched_pairs(prompt, finetune, message, tmp_path, capsys, monkeypatch):
    args = ["attack", *FGSM, "-d", "easy-vqa", "--limit", "2", "--out", tmp_path / "runs",
            "--prompt-tuned", DEFAULT / prompt, "--finetuned", DEFAULT / finetune]
    assert_refused(args, capsys, monkeypatch, message)


# ---------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------

PRESET_CASES = {
    "invalid toml": ("[[attack]\nname = ", "not valid TOML"),
    "not utf-8": (b"name = '\xff'", "not valid TOML"),
    "empty": ("", "at least one [[attack]]"),
    "no attack tables": ("description = 'x'\n", "at least one [[attack]]"),
    "attack without name": ("[[attack]]\neps = '8/255'\n", "has no name"),
    "unknown top-level key": ("speed = 3\n[[attack]]\nname = 'fgsm'\n", "unknown top-level key"),
    "unknown attack": ("[[attack]]\nname = 'bogus'\n", "Unknown attack"),
    "unknown parameter": ("[[attack]]\nname = 'fgsm'\nspeed = 3\n", "no parameter 'speed'"),
    "bad value": ("[[attack]]\nname = 'pgd-linf'\nsteps = 'many'\n", "must be a number"),
    "attack not a table": ("attack = 3\n", "at least one [[attack]]"),
}


@pytest.mark.parametrize("case", PRESET_CASES, ids=list(PRESET_CASES))
def test_presets(case, tmp_path, capsys, monkeypatch):
    content, message = PRESET_CASES[case]
    preset = tmp_path / "mine.toml"
    preset.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert_refused(["attack", "--preset", preset, "--out", tmp_path / "runs"], capsys, monkeypatch, message)


# ---------------------------------------------------------------------------
# Run folders: report, compare, pool and resuming attack
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A small finished run of the default pair (easy-vqa, fgsm, 6 examples)."""
    from robustmm.experiment import RunSpec, run_experiment

    out = tmp_path_factory.mktemp("runs")
    run_experiment(RunSpec(datasets=("easy-vqa",), limit=6, attacks=("fgsm",), device="cpu"), out, "done")
    return out / "done"


def _run_copy(finished_run, tmp_path) -> Path:
    target = tmp_path / "runs" / "done"
    shutil.copytree(finished_run, target)
    return target


RUN_CASES = {
    "corrupt run.json": (lambda r: (r / "run.json").write_text("{"), "corrupt"),
    "empty run.json": (lambda r: (r / "run.json").write_text(""), "corrupt"),
    "run.json a list": (lambda r: (r / "run.json").write_text("[]"), "not a JSON object"),
    "run.json of other settings": (lambda r: _edit_json(r / "run.json", lambda d: d["identity"].update(attacks=["x"])), "the attack settings"),
    "run.json not utf-8": (lambda r: (r / "run.json").write_bytes(b"\xff"), "corrupt"),
}


@pytest.mark.parametrize("case", RUN_CASES, ids=list(RUN_CASES))
def test_resuming_a_damaged_run_folder(case, finished_run, tmp_path, capsys, monkeypatch):
    mutate, message = RUN_CASES[case]
    run = _run_copy(finished_run, tmp_path)
    mutate(run)
    args = ["attack", "-d", "easy-vqa", "--limit", "6", "--attack", "fgsm", "--device", "cpu", "--out", run.parent, "--name", "done"]
    assert_refused(args, capsys, monkeypatch, message, watched=run)


REPORT_CASES = {
    "no records": (lambda r: (r / "records.jsonl").unlink(), "has no records.jsonl"),
    "empty records": (lambda r: (r / "records.jsonl").write_text(""), "holds no records"),
    "a line that is not a record": (lambda r: (r / "records.jsonl").write_text('{"run": 1}\n'), "is not an attack record"),
    "records not json": (lambda r: (r / "records.jsonl").write_text("nonsense\n"), "is not an attack record"),
    "corrupt meta.json": (lambda r: (r / "meta.json").write_text("{"), "corrupt"),
    "corrupt gallery index": (lambda r: _gallery(r).write_text("{\n"), "Gallery index"),
    "gallery entry without fields": (lambda r: _gallery(r).write_text('{"image": 1}\n'), "Gallery index"),
}


def _gallery(run: Path) -> Path:
    (run / "gallery").mkdir(exist_ok=True)
    return run / "gallery" / "gallery.jsonl"


@pytest.mark.parametrize("case", REPORT_CASES, ids=list(REPORT_CASES))
def test_report_of_a_damaged_run_folder(case, finished_run, tmp_path, capsys, monkeypatch):
    mutate, message = REPORT_CASES[case]
    run = _run_copy(finished_run, tmp_path)
    mutate(run)
    assert_refused(["report", run], capsys, monkeypatch, message, watched=run)


def test_report_of_a_file_or_a_missing_folder(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    assert_refused(["report", tmp_path / "file"], capsys, monkeypatch, "has no records.jsonl")
    assert_refused(["report", tmp_path / "missing"], capsys, monkeypatch, "has no records.jsonl")


def test_no_resume_refuses_a_folder_with_records(finished_run, tmp_path, capsys, monkeypatch):
    run = _run_copy(finished_run, tmp_path)
    args = ["attack", "-d", "easy-vqa", "--limit", "6", "--attack", "fgsm", "--device", "cpu", "--out", run.parent,
            "--name", "done", "--no-resume"]
    assert_refused(args, capsys, monkeypatch, "already holds records", watched=run)


@pytest.mark.parametrize("extra, message", [
    (["--member", "base"], "is not one of"),
    (["--out", "x.txt"], "must name a .md file"),
])
def test_compare_options(extra, message, finished_run, tmp_path, capsys, monkeypatch):
    run = _run_copy(finished_run, tmp_path)
    assert_refused(["compare", run, run, *extra], capsys, monkeypatch, message, watched=run)


def test_compare_and_pool_missing_runs(finished_run, tmp_path, capsys, monkeypatch):
    run = _run_copy(finished_run, tmp_path)
    assert_refused(["compare", run, tmp_path / "nope"], capsys, monkeypatch, "has no records.jsonl", watched=run)
    assert_refused(["pool"], capsys, monkeypatch, "Give run folders to pool")
    assert_refused(["pool", run], capsys, monkeypatch, "at least 2 prompt members", watched=run)
    assert_refused(["pool", run, run, "--out", tmp_path / "x.txt"], capsys, monkeypatch, "must name a .md file", watched=run)


def test_a_run_folder_held_by_another_process(finished_run, tmp_path, capsys, monkeypatch):
    from robustmm.runlock import RunLock

    run = _run_copy(finished_run, tmp_path)
    args = ["attack", "-d", "easy-vqa", "--limit", "6", "--attack", "fgsm", "--device", "cpu", "--out", run.parent, "--name", "done"]
    with RunLock(run):
        before = folder_state(run)
        err = assert_refused(args, capsys, monkeypatch, "is in use by robustmm attack")
        assert "pid" in err and folder_state(run) == before
        assert_refused(["report", run], capsys, monkeypatch, "is in use")
    code, _ = run_cli(args, capsys, monkeypatch)  # released: the run resumes (nothing left to do)
    assert code == 0


def test_paths_with_markup_characters_are_printed_as_given(tmp_path, capsys, monkeypatch):
    odd = tmp_path / "[/x]" / "[bold]runs"
    err = assert_refused(["report", odd], capsys, monkeypatch, "has no records.jsonl")
    assert "[/x]" in err and "[bold]runs" in err


# ---------------------------------------------------------------------------
# robustmm tune
# ---------------------------------------------------------------------------

TUNE_CASES = [
    (["tune", "finetune", "--base", "missing-base", "--out", "x"], "does not exist"),
    (["tune", "finetune", "--base", DEFAULT / "base", "--dataset", "mnist", "--out", "x"], "Unknown dataset"),
    (["tune", "finetune", "--base", DEFAULT / "base", "--out", "x", "--precision", "fp16"], "precision"),
    (["tune", "prompt", "--base", DEFAULT / "base", "--out", "x", "--style", "deep"], "style"),
    (["tune", "prompt", "--base", DEFAULT / "base", "--out", "x", "--where", "middle"], "Prompt place must be one of"),
    (["tune", "pretrain", "--out", "x", "--objective", "dance"], "objectives"),
    (["tune", "pretrain", "--out", "x", "--then-epochs", "-1"], "second phase"),
]


@pytest.mark.parametrize("args, message", TUNE_CASES, ids=[" ".join(map(str, a[:2] + a[-2:])) for a, _ in TUNE_CASES])
def test_tune_options(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_refused(args, capsys, monkeypatch, message)
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------
# The API raises RobustMMError for the same mistakes
# ---------------------------------------------------------------------------


def test_the_api_raises_robustmm_errors(tmp_path):
    from robustmm.attacks import get_attack, parse_attack_spec
    from robustmm.data import load_dataset
    from robustmm.experiment import RunSpec
    from robustmm.models.pair import load_pair

    for call in (lambda: get_attack("nonsense"), lambda: parse_attack_spec("fgsm:eps"), lambda: get_attack("fgsm", eps="x"),
                 lambda: load_dataset("nonexistent"), lambda: load_dataset("easy-vqa", split="dev"),
                 lambda: load_dataset("easy-vqa", limit=0), lambda: load_pair("other"),
                 lambda: load_pair(prompt_tuned=tmp_path / "a", finetuned=tmp_path / "b"),
                 lambda: RunSpec(seed=-1).check(), lambda: RunSpec(batch_size=0).check()):
        with pytest.raises(RobustMMError):
            call()


def test_bounded_inputs_take_bounded_time(tmp_path):
    """A 10,000-word question, a question of unknown tokens, and a million-example dataset cut by --limit."""
    import time

    from robustmm.data.dataset import Dataset
    from robustmm.models.pair import load_pair
    from robustmm.types import Example, Task

    pair = load_pair("default", task="vqa", device="cpu")
    image = make_jpeg(tmp_path / "i.jpg")
    long = Example("long", image, " ".join(["shape"] * 10_000), ("circle",), Task.VQA)
    unknown = Example("unk", image, "ꙮꙮ ꙮꙮꙮ ꙮ", ("circle",), Task.VQA)
    start = time.perf_counter()
    inputs = pair.finetuned.encode_texts([long.text, unknown.text])
    assert inputs["input_ids"].shape[1] <= pair.finetuned.backbone.config.max_text_len
    assert time.perf_counter() - start < 5.0
    big = Dataset("big", "test", Task.VQA, tuple(Example(f"e{i}", image, "what shape?", ("circle",), Task.VQA)
                                                for i in range(1_000_000)), pair.candidates)
    start = time.perf_counter()
    assert len(big.subset(10, seed=0)) == 10 and time.perf_counter() - start < 5.0
