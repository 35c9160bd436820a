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
    assert [a.key() for a in attacks] == ["fgsm(eps=2/255)", "fgsm(eps=8/255)", "noise-linf(eps=2/255)", "noise-linf(eps=8/255)"]
    summary = evaluate(_pair(tiny_pair_dir), dataset, attacks, batch_size=5, seed=0)
    assert len(summary.records) == 2 * len(attacks) * len(dataset)
    for comparison in summary.comparisons:
        assert comparison.a.n == comparison.b.n == len(dataset)
    by_member = {}
    for r in summary.records:
        by_member.setdefault((r.member, r.attack_key), set()).add(r.example_id)
    assert len({frozenset(v) for v in by_member.values()}) == 1  # the same examples everywhere
    for r in summary.records:  # one definition of correct: SKIPPED = wrong clean, SUCCEEDED = right clean, wrong attacked
        assert (r.status is Status.SKIPPED) == (r.clean_score < 0.5)
        assert (r.status is Status.SUCCEEDED) == (r.clean_score >= 0.5 and r.adv_score < 0.5)
        if r.status is Status.SKIPPED:
            assert r.adv_prediction == r.clean_prediction and r.queries == 0
        if r.linf is not None:
            assert r.linf <= r.eps + 1e-6


def test_eps_lists_apply_to_their_own_norm_only():
    attacks = [get_attack("fgsm"), get_attack("pgd-l2"), get_attack("embed-fgsm"), get_attack("blank-image")]
    keys = [a.key() for a in expand_eps(attacks, [1 / 255, 4 / 255], [0.5])]
    assert keys == ["fgsm(eps=1/255)", "fgsm(eps=4/255)", "pgd-l2(eps=0.5, steps=10, alpha=0.125, random_start=True)",
                    "embed-fgsm(eps=0.1, target=both)", "blank-image(gray=0.5)"]
    assert [a.key() for a in expand_eps(attacks, [], [])] == [a.key() for a in attacks]


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
    del row["image_rms"], row["text_rms"], row["details"]  # records written before the fields existed still load
    assert AttackRecord.from_json(row).image_rms is None


def test_summary_numbers_recomputed_from_the_stored_records(tiny_pair_dir, tmp_path):
    dataset = load_dataset("easy-vqa", split="test", limit=16, seed=1)
    store = RecordStore(tmp_path / "records.jsonl")
    summary = evaluate(_pair(tiny_pair_dir), dataset, [get_attack("fgsm", eps="8/255")], batch_size=8, seed=0, store=store)
    rows = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * len(dataset)
    (c,) = summary.comparisons
    by = {m: {r["example_id"]: r for r in rows if r["member"] == m} for m in ("prompt", "finetune")}
    for member, side in (("prompt", c.a), ("finetune", c.b)):
        mine = list(by[member].values())
        assert side.clean_accuracy == pytest.approx(sum(r["clean_score"] >= 0.5 for r in mine) / len(mine))
        assert side.robust_accuracy == pytest.approx(sum(r["adv_score"] >= 0.5 for r in mine) / len(mine))
        assert side.succeeded == sum(r["status"] == "succeeded" for r in mine)
        assert side.skipped == sum(r["status"] == "skipped" for r in mine)
    both = [i for i in by["prompt"] if by["prompt"][i]["clean_score"] >= 0.5 and by["finetune"][i]["clean_score"] >= 0.5]
    assert c.n_both_correct == len(both)
    only_p = sum(by["prompt"][i]["adv_score"] < 0.5 <= by["finetune"][i]["adv_score"] for i in both)
    only_f = sum(by["finetune"][i]["adv_score"] < 0.5 <= by["prompt"][i]["adv_score"] for i in both)
    assert (c.only_a_broken, c.only_b_broken) == (only_p, only_f)
    if both:
        assert c.difference == pytest.approx((only_f - only_p) / len(both))


def test_reading_records_never_changes_the_file_and_a_resume_sets_the_torn_tail_aside(tmp_path):
    store = RecordStore(tmp_path / "records.jsonl")
    record = AttackRecord(run="r", task="vqa", dataset="d", member="prompt", model="m", attack="fgsm", attack_key="fgsm()",
                          modality="image", eps=0.1, example_id="e1", answers=("a",), text="t", adv_text="t",
                          clean_prediction="a", adv_prediction="b", clean_score=1.0, adv_score=0.0, status=Status.SUCCEEDED)
    store.append([record])
    with open(store.path, "a") as handle:
        handle.write('{"run": "r", "task": "vq')  # a kill in the middle of a write
    before = store.path.read_bytes()
    assert store.load() == [record] and store.torn()
    assert store.path.read_bytes() == before  # loading only reads
    aside = store.set_aside_torn_tail()
    assert aside.read_text() == '{"run": "r", "task": "vq' and store.path.read_text().endswith("\n") and not store.torn()
    assert store.set_aside_torn_tail() is None


# ---------------------------------------------------------------------------
# The invariant: a record is a pure function of (settings, member, attack key, example)
# ---------------------------------------------------------------------------

INVARIANCE_ATTACKS = ("fgsm:eps=4/255", "pgd-linf:eps=4/255,steps=3", "pgd-l2:eps=0.5,steps=2", "noise-linf:eps=8/255",
                      "embed-fgsm:eps=0.05")


@pytest.fixture(scope="module")
def default_vqa_pair():
    return load_pair("default", task="vqa", device="cpu")


def _records(pair, dataset, batch_size, seed=0, attacks=INVARIANCE_ATTACKS):
    from robustmm.attacks import parse_attack_spec

    return evaluate(pair, dataset, [parse_attack_spec(a) for a in attacks], batch_size=batch_size, seed=seed).records


def test_records_do_not_depend_on_batch_size_or_example_order(default_vqa_pair):
    from robustmm.data.dataset import Dataset

    dataset = load_dataset("easy-vqa", split="test", limit=24, seed=0)
    reference = _comparable(_records(default_vqa_pair, dataset, 8))
    assert len(reference) == 2 * len(INVARIANCE_ATTACKS) * 24
    for batch_size in (1, 32):
        assert _comparable(_records(default_vqa_pair, dataset, batch_size)) == reference
    shuffled = Dataset(dataset.name, dataset.split, dataset.task, tuple(reversed(dataset.examples)), dataset.candidates)
    assert _comparable(_records(default_vqa_pair, shuffled, 5)) == reference


def test_both_members_get_the_same_random_draws_and_the_seed_changes_them(default_vqa_pair, monkeypatch):
    from robustmm import seeding

    seen = []
    draw = seeding.per_example_uniform

    def spy(seeds, shape, device="cpu", dtype=None):
        seen.append(tuple(seeds))
        return draw(seeds, shape, device)

    monkeypatch.setattr(seeding, "per_example_uniform", spy)
    dataset = load_dataset("easy-vqa", split="test", limit=8, seed=0)
    records = _records(default_vqa_pair, dataset, 8, attacks=("pgd-linf:eps=4/255,steps=1",))
    prompt_attacked = sum(r.member == "prompt" and r.status is not Status.SKIPPED for r in records)
    assert len(seen) == 2 and len(seen[0]) == prompt_attacked
    per_member = [dict(zip([r.example_id for r in records if r.member == m and r.status is not Status.SKIPPED], draws))
                  for m, draws in zip(("prompt", "finetune"), seen)]
    shared = set(per_member[0]) & set(per_member[1])
    assert shared and all(per_member[0][i] == per_member[1][i] for i in shared)  # same example, same random start
    seen.clear()
    _records(default_vqa_pair, dataset, 8, seed=1, attacks=("pgd-linf:eps=4/255,steps=1",))
    assert not set(seen[0]) & set(per_member[0].values())  # --seed changes every draw
    noise = [_records(default_vqa_pair, dataset, 8, seed=s, attacks=("noise-linf:eps=8/255",)) for s in (0, 1)]
    assert [r.l2 for r in noise[0]] != [r.l2 for r in noise[1]]


def test_attacks_aim_at_the_gold_answer():
    from robustmm.evaluate import gold_targets
    from robustmm.types import Example, Task

    candidates = ("two", "three", "four")
    examples = [Example("a", None, "how many?", ("two",) * 3 + ("three",) * 7, Task.VQA),  # best-scoring answer: three
                Example("b", None, "how many?", ("five",) * 10, Task.VQA),  # no candidate scores: -100
                Example("c", None, "how many?", ("four",), Task.VQA)]
    assert gold_targets(examples, candidates, "vqa").tolist() == [1, -100, 2]


def test_the_runner_passes_gold_targets_and_the_run_seed(default_vqa_pair, monkeypatch):
    from robustmm.attacks.image import FGSM
    from robustmm.evaluate import gold_targets

    dataset = load_dataset("easy-vqa", split="test", limit=8, seed=0)
    seen = []
    run = FGSM.run

    def spy(self, model, batch):
        seen.append((batch.targets.tolist(), gold_targets(batch.examples, model.candidates, "vqa").tolist(), batch.seed))
        return run(self, model, batch)

    monkeypatch.setattr(FGSM, "run", spy)
    _records(default_vqa_pair, dataset, 8, seed=5, attacks=("fgsm",))
    assert seen and all(targets == gold and seed == 5 for targets, gold, seed in seen)


def _attack_args(tiny_pair_dir, out, name):
    return ["attack", "--prompt-tuned", str(tiny_pair_dir / "easy-vqa" / "prompt"), "--finetuned",
            str(tiny_pair_dir / "easy-vqa" / "finetune"), "--dataset", "easy-vqa", "--limit", "24", "--batch-size", "3",
            "--attack", "fgsm:eps=4/255", "--attack", "pgd-linf:eps=4/255,steps=3", "--device", "cpu", "--no-transfer",
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
    (["--attack", "fgsm", "--seed", "-1"], "seed must be"),
    (["--attack", "fgsm", "--name", "../.."], "single folder name"),
    (["--attack", "pgd-l2", "--eps-l2", "0"], "eps-l2"),
    (["--attack", "fgsm", "--until-decided", "--precision", "2"], "precision"),
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
            "--dataset", "easy-vqa", "--attack", "fgsm", "--limit", "2", "--no-transfer", "--out", str(tmp_path / "runs"), "--name", "moved")
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
    assert changed.returncode == 2 and "the model weights changed" in changed.stderr and "Traceback" not in changed.stderr
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


def test_a_run_folder_refuses_settings_that_changed_and_names_what_changed(tiny_pair_dir, tmp_path):
    preset = tmp_path / "mine.toml"
    preset.write_text('[[attack]]\nname = "fgsm"\neps = "4/255"\n')
    args = ["attack", "--prompt-tuned", str(tiny_pair_dir / "easy-vqa" / "prompt"), "--finetuned",
            str(tiny_pair_dir / "easy-vqa" / "finetune"), "--dataset", "easy-vqa", "--limit", "4", "--preset", str(preset),
            "--device", "cpu", "--out", str(tmp_path / "runs"), "--name", "mine"]
    assert _cli(*args).returncode == 0
    assert _cli(*args, "--batch-size", "3").returncode == 0  # the batch size is not part of a run's identity
    preset.write_text('[[attack]]\nname = "fgsm"\neps = "8/255"\n')  # the same preset name, edited
    edited = _cli(*args)
    assert edited.returncode == 2 and "the attack settings" in edited.stderr and "Traceback" not in edited.stderr
    seeded = _cli(*args[:-2], "--name", "other", "--seed", "3")
    assert seeded.returncode == 0
    run = json.loads((tmp_path / "runs" / "other" / "run.json").read_text())
    assert run["spec"]["seed"] == 3 and run["identity"]["sample"]["seed"] == 3
    # without --name the folder is named by the identity digest, so changed settings get a new folder
    unnamed = _cli(*args[:-2])
    assert unnamed.returncode == 0 and len(list((tmp_path / "runs").glob("run-*"))) == 1


def test_until_decided_grows_the_sample_in_rounds_and_reports_the_stopping_rule(tiny_pair_dir, tmp_path):
    from robustmm.experiment import RunSpec, run_experiment

    spec = RunSpec(prompt_tuned=str(tiny_pair_dir / "easy-vqa" / "prompt"), finetuned=str(tiny_pair_dir / "easy-vqa" / "finetune"),
                   datasets=("easy-vqa",), limit=10, attacks=("blank-image",), until_decided=True, precision=0.3, device="cpu")
    report, summary = run_experiment(spec, tmp_path, "seq")
    meta = json.loads((tmp_path / "seq" / "meta.json").read_text())
    state = meta["sequential"]["easy-vqa"]
    n = state["n"]
    assert n % 10 == 0 and n >= 10 and (state["stop"] or n == 9673)
    assert all(s["half_width"] <= 0.3 for s in state["settings"].values()) == state["stop"]
    assert len({r.example_id for r in summary.records}) == n  # every round's examples kept
    assert len(summary.records) == 2 * n and len({r.key for r in summary.records}) == 2 * n  # none computed twice
    text = report.read_text()
    assert "Sequential sampling" in text and f"n = {n}" in text and "Waudby-Smith" in text
    # the rounds are nested samples: the first 10 are the plain --limit 10 sample
    from robustmm.data import load_dataset

    first = {e.id for e in load_dataset("easy-vqa", split="test", limit=10, seed=0).examples}
    assert first <= {r.example_id for r in summary.records}


def test_answer_generate_reports_open_ended_clean_accuracy_from_stored_rows(tmp_path):
    from robustmm.experiment import RunSpec, rerender, run_experiment
    from robustmm.generation import read_rows

    spec = RunSpec(datasets=("easy-ve",), limit=6, attacks=("blank-image",), answer="generate", device="cpu")
    report, _ = run_experiment(spec, tmp_path, "gen")
    rows = read_rows(tmp_path / "gen" / "generations.jsonl")
    assert len(rows) == 2 * 6 and {r["member"] for r in rows} == {"prompt", "finetune"}
    assert all(r["answer"] in ("entailment", "neutral", "contradiction") or isinstance(r["answer"], str) for r in rows)
    text = report.read_text()
    finetuned = [r for r in rows if r["member"] == "finetune"]
    accuracy = 100 * sum(r["score"] >= 0.5 for r in finetuned) / len(finetuned)
    assert "Open-ended answers" in text and f"| finetuned | 6 | {accuracy:.1f} [" in text
    assert "| member | model | family | tuning |" in text  # the members table
    (tmp_path / "gen" / "report.md").unlink()
    assert rerender(tmp_path / "gen").read_text() == text
