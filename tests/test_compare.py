"""`robustmm compare`: one member of two runs paired on the same examples and attacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robustmm.compare import compare_runs
from robustmm.errors import RobustMMError
from robustmm.records import RecordStore
from robustmm.summary import summarize
from records import make_record


def _record(member, key, example, clean, adv, dataset="easy-vqa", text=None):
    return make_record(member, example, clean, adv, key=key, dataset=dataset, text=text)


def _run(folder, rows):
    """rows: (member, attack_key, example, clean, adv, ...) -> a run folder holding records.jsonl."""
    RecordStore(folder / "records.jsonl").append([_record(*row) for row in rows])
    return folder


# run A: finetune broken by the attack on e0 only; run B: finetune broken on e0..e5 (6 of 10)
A_ROWS = [("finetune", "fgsm(eps=8/255)", f"e{i}", 1, i != 0) for i in range(10)]
B_ROWS = [("finetune", "fgsm(eps=8/255)", f"e{i}", 1, i >= 6) for i in range(10)]


def test_numbers_are_recomputed_from_both_runs_records(tmp_path):
    extra_a = [("finetune", "pgd-linf(eps=8/255)", "e0", 1, 1)]  # only in A
    a = RecordStore(_run(tmp_path / "a", A_ROWS + extra_a) / "records.jsonl").load()
    b = RecordStore(_run(tmp_path / "b", B_ROWS + [("prompt", "fgsm(eps=8/255)", "e0", 1, 1)]) / "records.jsonl").load()
    rows, only = compare_runs(a, b, "finetune")
    (c,) = rows
    # all 10 right clean in both runs; the attack breaks 1 of 10 in A and 6 of 10 in B; e1..e5 broken for B only
    assert (c.a.n, c.b.n, c.n_both_correct) == (10, 10, 10)
    assert c.a.asr == pytest.approx(0.1) and c.b.asr == pytest.approx(0.6)
    assert c.difference == pytest.approx(0.5) and (c.only_a_broken, c.only_b_broken) == (0, 5)
    assert c.p_value == pytest.approx(0.0625) and c.outcome == "tie"  # 5 discordant pairs cannot reach p < 0.05
    assert c.a.robust_accuracy == pytest.approx(0.9) and c.b.robust_accuracy == pytest.approx(0.4)
    assert only == [("easy-vqa", "pgd-linf(eps=8/255)", "only in A")]


def test_the_same_run_twice_matches_its_own_summary(tmp_path):
    rows = [(m, "fgsm(eps=8/255)", f"e{i}", i % 4 != 0, (i + (m == "prompt")) % 3 == 0) for m in ("prompt", "finetune") for i in range(30)]
    records = RecordStore(_run(tmp_path / "a", rows) / "records.jsonl").load()
    (within,) = summarize(records).comparisons
    (c,) = compare_runs(records, records, "prompt", "finetune")[0]
    assert (c.difference, c.ci, c.p_value, c.p_holm) == (within.difference, within.ci, within.p_value, within.p_holm)


def test_runs_made_from_different_data_or_members_are_refused(tmp_path):
    a = [_record(*row) for row in A_ROWS]
    changed = [_record("finetune", "fgsm(eps=8/255)", "e0", 1, 1, text="another question?")]
    with pytest.raises(RobustMMError, match="different inputs"):
        compare_runs(a, changed, "finetune")
    with pytest.raises(RobustMMError, match="no records of member 'prompt'"):
        compare_runs(a, a, "prompt")
    other = [_record("finetune", "fgsm(eps=8/255)", "e0", 1, 1, dataset="easy-ve")]
    with pytest.raises(RobustMMError, match="share no attack setting"):
        compare_runs(a, other, "finetune")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "robustmm.cli", "compare", *map(str, args)], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=300)


def test_cli_writes_markdown_and_json_and_refuses_bad_input(tmp_path):
    a, b = _run(tmp_path / "a", A_ROWS), _run(tmp_path / "b", B_ROWS)
    result = _cli(a, b)
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "compare-a-vs-b-finetune.md").read_text()
    assert "| fgsm | 8/255 | 10 | 10.0 | 60.0 | +50.0 [" in report and "| 0 / 5 | 0.0625 | 0.0625 |" in report
    assert "no detectable difference under 1" in report
    data = json.loads((tmp_path / "compare-a-vs-b-finetune.json").read_text())
    assert data["comparisons"][0]["p_value"] == pytest.approx(0.0625) and data["comparisons"][0]["outcome"] == "tie"

    for args, message in (((a, tmp_path / "nope"), "has no records.jsonl"),
                          ((a, b, "--member", "base"), "is not one of"),
                          ((a, b, "--out", tmp_path / "x.txt"), "must name a .md file"),
                          ((a, b, "--out", tmp_path / "a" / "records.jsonl" / "c.md"), "Cannot write the comparison")):
        bad = _cli(*args)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "x.txt").exists()


def test_runs_with_the_same_folder_name_are_told_apart_by_their_parent_folders(tmp_path):
    from robustmm.cli import _distinct_names

    assert _distinct_names(Path("/r/old/default"), Path("/r/default")) == ("old/default", "r/default")
    assert _distinct_names(Path("/r/a"), Path("/r/b")) == ("a", "b")
    a, b = _run(tmp_path / "old" / "default", A_ROWS), _run(tmp_path / "new" / "default", B_ROWS)
    result = _cli(a, b)
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "new" / "compare-old-default-vs-new-default-finetune.md").read_text()
    assert "**A** = old/default/finetune" in report and "**B** = new/default/finetune" in report


def test_comparing_each_member_of_the_same_two_runs_writes_two_files(tmp_path):
    prompt_rows = [("prompt", "fgsm(eps=8/255)", f"e{i}", 1, i % 2 == 0) for i in range(10)]
    a, b = _run(tmp_path / "a", A_ROWS + prompt_rows), _run(tmp_path / "b", B_ROWS + prompt_rows)
    for args in ((), ("--member", "prompt"), ("--member", "prompt", "--member-b", "finetune")):
        result = _cli(a, b, *args)
        assert result.returncode == 0, result.stderr
    finetune, prompt = (tmp_path / "compare-a-vs-b-finetune.md").read_text(), (tmp_path / "compare-a-vs-b-prompt.md").read_text()
    assert "**A** = a/finetune" in finetune and "**A** = a/prompt" in prompt
    assert "**B** = b/finetune" in (tmp_path / "compare-a-prompt-vs-b-finetune.md").read_text()
