"""The runner, records, summary, report and `robustmm attack` end to end on a tiny pair."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from robustmm.attacks import get_attack
from robustmm.data import load_dataset
from robustmm.evaluate import evaluate, expand_eps
from robustmm.models.pair import load_pair
from robustmm.records import RecordStore
from robustmm.types import AttackRecord, Status

TIMING = ("seconds",)


def _pair(tiny_pair_dir):
    return load_pair(prompt_tuned=tiny_pair_dir / "easy-vqa" / "prompt", finetuned=tiny_pair_dir / "easy-vqa" / "finetune", device="cpu")


def _cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "robustmm.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env or os.environ.copy(), timeout=600)


def _comparable(records):
    rows = [{k: v for k, v in r.to_json().items() if k not in TIMING} for r in records]
    return sorted(rows, key=lambda r: (r["member"], r["attack_key"], r["example_id"]))


def test_evaluate_in_memory_same_examples_for_both_models(tiny_pair_dir):
    dataset = load_dataset("easy-vqa", split="test", limit=12, seed=0)
    attacks = expand_eps([get_attack("fgsm", eps="2/255"), get_attack("noise-linf", eps="8/255")], [2 / 255, 8 / 255])
    summary = evaluate(_pair(tiny_pair_dir), dataset, attacks, batch_size=5, seed=0)
    assert len(summary.records) == 2 * len(attacks) * len(dataset)
    for comparison in summary.comparisons:
        assert comparison.prompt.n == comparison.finetune.n == len(dataset)
    by_member = {}
    for r in summary.records:
        by_member.setdefault((r.member, r.attack_key), set()).add(r.example_id)
    assert len({frozenset(v) for v in by_member.values()}) == 1  # the same examples everywhere
    for r in summary.records:
        if r.clean_score == 0:
            assert r.status is Status.SKIPPED and r.adv_prediction == r.clean_prediction
        if r.linf is not None:
            assert r.linf <= r.eps + 1e-6


def test_embedding_attack_records_keep_the_clean_embedding_scale(tiny_pair_dir):
    dataset = load_dataset("easy-vqa", split="test", limit=6, seed=0)
    summary = evaluate(_pair(tiny_pair_dir), dataset, [get_attack("embed-fgsm-rms", eps=0.5), get_attack("fgsm")],
                       batch_size=4, seed=0)
    for r in summary.records:
        if r.attack == "embed-fgsm-rms" and r.status is not Status.SKIPPED:
            assert r.image_rms > 0 and r.text_rms > 0
            assert r.linf == pytest.approx(0.5 * max(r.image_rms, r.text_rms), rel=1e-4)
        elif r.attack == "fgsm":
            assert r.image_rms is None and r.text_rms is None
    row = summary.records[0].to_json()
    assert AttackRecord.from_json(row) == summary.records[0]
    del row["image_rms"], row["text_rms"]  # records written before the fields existed still load
    assert AttackRecord.from_json(row).image_rms is None


def test_summary_numbers_recomputed_from_records(tiny_pair_dir, tmp_path):
    dataset = load_dataset("easy-vqa", split="test", limit=16, seed=1)
    store = RecordStore(tmp_path / "records.jsonl")
    summary = evaluate(_pair(tiny_pair_dir), dataset, [get_attack("fgsm", eps="8/255")], batch_size=8, seed=0, store=store)
    rows = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * len(dataset)
    (c,) = summary.comparisons
    for member, stats in (("prompt", c.prompt), ("finetune", c.finetune)):
        mine = [r for r in rows if r["member"] == member]
        clean = sum(r["clean_score"] for r in mine) / len(mine)
        robust = sum(r["adv_score"] for r in mine) / len(mine)
        assert stats.clean_accuracy == pytest.approx(clean)
        assert stats.robust_accuracy == pytest.approx(robust)
        assert stats.absolute_drop == pytest.approx(clean - robust)
        assert stats.succeeded == sum(r["status"] == "succeeded" for r in mine)
        assert stats.skipped == sum(r["status"] == "skipped" for r in mine)
    both = {r["example_id"] for r in rows if r["member"] == "prompt" and r["clean_score"] >= 0.5} & {
        r["example_id"] for r in rows if r["member"] == "finetune" and r["clean_score"] >= 0.5}
    for member, stats in (("prompt", c.prompt), ("finetune", c.finetune)):
        flipped = [r["adv_score"] < 0.5 for r in rows if r["member"] == member and r["example_id"] in both]
        expected = sum(flipped) / len(flipped) if flipped else float("nan")
        assert stats.n_both_correct == len(both)
        assert (stats.success_rate_both_correct == pytest.approx(expected)) or (not flipped)
    p_adv = {r["example_id"]: r["adv_score"] >= 0.5 for r in rows if r["member"] == "prompt"}
    f_adv = {r["example_id"]: r["adv_score"] >= 0.5 for r in rows if r["member"] == "finetune"}
    assert c.mcnemar["a_only"] == sum(p_adv[i] and not f_adv[i] for i in p_adv)
    assert c.mcnemar["b_only"] == sum(f_adv[i] and not p_adv[i] for i in p_adv)


def test_record_store_drops_torn_line(tmp_path):
    store = RecordStore(tmp_path / "records.jsonl")
    record = AttackRecord(run="r", task="vqa", dataset="d", member="prompt", model="m", attack="fgsm", attack_key="fgsm()",
                          modality="image", eps=0.1, example_id="e1", answers=("a",), text="t", adv_text="t",
                          clean_prediction="a", adv_prediction="b", clean_score=1.0, adv_score=0.0, status=Status.SUCCEEDED)
    store.append([record])
    with open(store.path, "a") as handle:
        handle.write('{"run": "r", "task": "vq')  # a kill in the middle of a write
    assert store.load() == [record]
    assert store.path.read_text().endswith("\n")


def _attack_args(tiny_pair_dir, out, name):
    return ["attack", "--prompt-tuned", str(tiny_pair_dir / "easy-vqa" / "prompt"), "--finetuned",
            str(tiny_pair_dir / "easy-vqa" / "finetune"), "--dataset", "easy-vqa", "--limit", "24", "--batch-size", "3",
            "--attack", "fgsm:eps=4/255", "--attack", "pgd-linf:eps=4/255,steps=3", "--device", "cpu",
            "--out", str(out), "--name", name]


@pytest.mark.slow
def test_kill_and_resume_gives_the_records_of_an_uninterrupted_run(tiny_pair_dir, tmp_path):
    out = tmp_path / "runs"
    full = _cli(*_attack_args(tiny_pair_dir, out, "full"))
    assert full.returncode == 0, full.stderr
    expected = RecordStore(out / "full" / "records.jsonl").load()
    assert len(expected) == 2 * 2 * 24

    args = [sys.executable, "-m", "robustmm.cli", *_attack_args(tiny_pair_dir, out, "killed")]
    records = out / "killed" / "records.jsonl"
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill -9 once some, but not all, records exist
        if records.exists() and records.read_text().count("\n") >= 20:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = records.read_text().count("\n")
    assert 0 < partial < len(expected)
    assert not (out / "killed" / "report.md").exists()
    resumed = _cli(*_attack_args(tiny_pair_dir, out, "killed"))
    assert resumed.returncode == 0, resumed.stderr
    got = RecordStore(records).load()
    assert _comparable(got) == [dict(r, run="killed") for r in _comparable([r for r in expected])] or \
        _comparable(got) == [{**r, "run": "killed"} for r in _comparable(expected)]
    assert len({r.key for r in got}) == len(got)  # no duplicates
    assert (out / "killed" / "report.md").exists()
    # the records of the killed invocation (a torn last line, if any, is dropped and redone)
    assert json.loads((out / "killed" / "meta.json").read_text())["resumed_records"] in (partial - 1, partial)
    assert json.loads((out / "full" / "meta.json").read_text())["resumed_records"] == 0


def test_report_files_and_rerender(tiny_pair_dir, tmp_path):
    out = tmp_path / "runs"
    result = _cli("attack", "--prompt-tuned", str(tiny_pair_dir / "easy-vqa" / "prompt"), "--finetuned",
                  str(tiny_pair_dir / "easy-vqa" / "finetune"), "--dataset", "easy-vqa", "--limit", "10", "--attack", "fgsm",
                  "--eps", "2/255,8/255", "--device", "cpu", "--out", str(out), "--name", "r")
    assert result.returncode == 0, result.stderr
    # not a terminal: one progress line per member x attack setting as it finishes (a live bar would print nothing)
    finished = [line for line in result.stdout.splitlines() if line.endswith(" s") and "10/10 examples" in line]
    assert len(finished) == 2 * 2 and {line.split(" · ")[1].strip() for line in finished} == {"prompt", "finetune"}
    run = out / "r"
    report = (run / "report.md").read_text()
    assert "## easy-vqa (vqa)" in report and "McNemar" in report and "robustmm attack" in report
    assert (run / "figures" / "eps-curve-easy-vqa.png").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert len(summary["comparisons"]) == 2
    (run / "report.md").unlink()
    again = _cli("report", str(run))
    assert again.returncode == 0, again.stderr
    assert (run / "report.md").read_text() == report


def test_markdown_escaping():
    from robustmm.report import md_escape

    assert md_escape("a|b *c* `d` <e>") == r"a\|b \*c\* \`d\` \<e\>"
    assert "\n" not in md_escape("two\nlines")


@pytest.mark.parametrize("bad_args, message", [
    (["--attack", "nonsense"], "Unknown attack"),
    (["--attack", "fgsm", "--eps", "eight"], "eps"),
    (["--attack", "fgsm:eps=-1"], "eps"),
    (["--attack", "fgsm:speed=3"], "no parameter"),
])
def test_bad_attack_input_exits_2_with_one_sentence(tiny_pair_dir, tmp_path, bad_args, message):
    result = _cli("attack", "--prompt-tuned", str(tiny_pair_dir / "easy-vqa" / "prompt"), "--finetuned",
                  str(tiny_pair_dir / "easy-vqa" / "finetune"), "--dataset", "easy-vqa", "--limit", "4",
                  "--out", str(tmp_path / "runs"), *bad_args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and message in result.stderr
    assert not list((tmp_path / "runs").glob("*/report.md"))


def test_missing_pair_files_empty_dataset_and_unwritable_output(tiny_pair_dir, tmp_path):
    missing = _cli("attack", "--prompt-tuned", str(tmp_path / "nope"), "--finetuned", str(tiny_pair_dir / "easy-vqa" / "finetune"),
                   "--dataset", "easy-vqa", "--attack", "fgsm", "--out", str(tmp_path / "runs"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    moved = tmp_path / "moved" / "prompt"
    shutil.copytree(tiny_pair_dir / "easy-vqa" / "prompt", moved)
    args = ("attack", "--prompt-tuned", str(moved), "--finetuned", str(tiny_pair_dir / "easy-vqa" / "finetune"),
            "--dataset", "easy-vqa", "--attack", "fgsm", "--limit", "2", "--out", str(tmp_path / "runs"), "--name", "moved")
    lost = _cli(*args)
    assert lost.returncode == 2 and "robustmm attack --base" in lost.stderr and "Traceback" not in lost.stderr
    found = _cli(*args, "--base", str(tiny_pair_dir / "base"))
    assert found.returncode == 0, found.stderr
    assert len(RecordStore(tmp_path / "runs" / "moved" / "records.jsonl").load()) == 4
    # resuming that run folder after the prompts changed would mix two models' records: refused
    from safetensors.torch import load_file, save_file

    prompts = load_file(str(moved / "prompts.safetensors"))
    save_file({k: v + 1.0 for k, v in prompts.items()}, str(moved / "prompts.safetensors"))
    changed = _cli(*args, "--base", str(tiny_pair_dir / "base"))
    assert changed.returncode == 2 and "easy-vqa/prompt changed since" in changed.stderr and "Traceback" not in changed.stderr
    assert len(RecordStore(tmp_path / "runs" / "moved" / "records.jsonl").load()) == 4

    empty = tmp_path / "vqa"
    empty.mkdir()
    (empty / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps({"questions": []}))
    (empty / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": []}))
    (empty / "val2014").mkdir()
    from conftest import make_jpeg

    make_jpeg(empty / "val2014" / "COCO_val2014_000000000001.jpg")
    result = _cli("attack", "--prompt-tuned", str(tiny_pair_dir / "easy-vqa" / "prompt"), "--finetuned",
                  str(tiny_pair_dir / "easy-vqa" / "finetune"), "--dataset", str(empty), "--split", "val2014",
                  "--attack", "fgsm", "--out", str(tmp_path / "runs"))
    assert result.returncode == 2 and "no examples" in result.stderr and "Traceback" not in result.stderr

    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    result = _cli("attack", "--prompt-tuned", str(tiny_pair_dir / "easy-vqa" / "prompt"), "--finetuned",
                  str(tiny_pair_dir / "easy-vqa" / "finetune"), "--dataset", "easy-vqa", "--limit", "4", "--attack", "fgsm",
                  "--out", str(blocker / "runs"))
    assert result.returncode == 2 and "not writable" in result.stderr and "Traceback" not in result.stderr
