"""`robustmm pool`: differently seeded members pooled into one verdict per attack setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from records import make_record
from robustmm.comparison import compare_groups
from robustmm.errors import RobustMMError
from robustmm.pool import members_of, pool_members
from robustmm.records import RecordStore

KEY = "fgsm(eps=8/255)"
N = 40


def _record(member, example, clean, adv, text=None):
    return make_record(member, example, clean, adv, key=KEY, text=text)


def _member(member, broken: int, offset: int = 0):
    """Records of one member: every example right clean, the attack breaks ``broken`` of N (from ``offset``)."""
    return [_record(member, f"e{i}", 1, not (offset <= i < offset + broken)) for i in range(N)]


def test_pooled_numbers_are_recomputed_from_every_members_records():
    prompts = [("p1", _member("prompt", 20)), ("p2", _member("prompt", 30, 5)), ("p3", _member("prompt", 10, 2))]
    finetunes = [("f1", _member("finetune", 2)), ("f2", _member("finetune", 12, 1))]
    members = members_of([], prompts, finetunes)
    assert [m.label for m in members] == ["P1", "P2", "P3", "F1", "F2"]
    (c,) = pool_members(members)[0]
    # every example right clean for every member: the both-correct set is all 40; ASR = broken / 40
    assert c.n == N and c.n_both_correct == N
    assert c.a.members == pytest.approx((0.5, 0.75, 0.25)) and c.b.members == pytest.approx((0.05, 0.3))
    assert c.difference == pytest.approx((0.05 + 0.3) / 2 - (0.5 + 0.75 + 0.25) / 3)
    assert c.test == "hierarchical bootstrap" and (c.ci[1] < 0) == (c.p_value < 0.05)
    by_id = [sorted(m.records, key=lambda r: r.example_id) for m in members]  # pool pairs examples in sorted id order
    alone = compare_groups(by_id[:3], by_id[3:], ("prompt-tuned ×3", "finetuned ×2"))
    assert (c.difference, c.ci, c.p_value) == (alone.difference, alone.ci, alone.p_value)


def test_pooling_needs_two_members_of_each_method_and_warns_under_three(caplog):
    one = members_of([("run1", _member("prompt", 20) + _member("finetune", 2))])
    with pytest.raises(RobustMMError, match="at least 2 prompt members"):
        pool_members(one)
    two = members_of([("run1", _member("prompt", 20) + _member("finetune", 2)),
                      ("run2", _member("prompt", 22) + _member("finetune", 3))])
    with caplog.at_level("WARNING", logger="robustmm"):
        pool_members(two)
    assert "only 2 prompt members" in caplog.text


def test_a_model_listed_twice_other_data_or_a_missing_member_is_refused():
    p, f = _member("prompt", 20), _member("finetune", 2)
    p2, f2 = _member("prompt", 25), _member("finetune", 4)
    with pytest.raises(RobustMMError, match="identical records on easy-vqa"):
        pool_members(members_of([("run1", p + f), ("run2", p2 + f)]))
    other = [_record("finetune", f"e{i}", 1, 1, text="another question?") for i in range(N)]
    with pytest.raises(RobustMMError, match="different inputs"):
        pool_members(members_of([("run1", p + f), ("run2", p2 + f2)], finetune_from=[("run3", other)]))
    with pytest.raises(RobustMMError, match="has no records of its finetune member"):
        members_of([("run1", p)])
    with pytest.raises(RobustMMError, match="No finetune member"):
        members_of([], prompt_from=[("run1", p)])


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "robustmm.cli", "pool", *map(str, args)], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=300)


def test_cli_writes_markdown_and_json_and_refuses_bad_input(tmp_path):
    folders = []
    for seed, (p, f) in enumerate(((20, 2), (30, 4), (10, 0))):
        folder = tmp_path / f"seed{seed}"
        RecordStore(folder / "records.jsonl").append(_member("prompt", p, seed) + _member("finetune", f, seed))
        folders.append(folder)
    result = _cli(*folders)
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "pool-seed0+seed1+seed2.md").read_text()
    assert "| fgsm | 8/255 | 40 | 50.0 | 5.0 | -45.0 [" in report and "| 50 / 75 / 25 ‖ 5 / 10 / 0 |" in report
    assert "| P2 | `seed1/prompt` | 100.0% (40) |" in report
    data = json.loads((tmp_path / "pool-seed0+seed1+seed2.json").read_text())
    assert [m["label"] for m in data["members"]] == ["P1", "P2", "P3", "F1", "F2", "F3"]
    assert data["unit"] == "training run (member)" and data["settings"][0]["outcome"] == "b"

    for args, message in (((), "Give run folders to pool"),
                          ((folders[0], tmp_path / "nope"), "has no records.jsonl"),
                          ((folders[0], folders[1], "--finetune-from", folders[0]), "identical records"),
                          ((folders[0],), "at least 2 prompt members"),
                          ((*folders, "--out", tmp_path / "x.txt"), "must name a .md file")):
        bad = _cli(*args)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "x.txt").exists()
