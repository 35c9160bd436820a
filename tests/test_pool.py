"""`robustmm pool`: differently seeded members pooled into one verdict per attack setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from robustmm import metrics
from robustmm.errors import RobustMMError
from robustmm.pool import members_of, pool_members
from robustmm.records import RecordStore
from robustmm.types import AttackRecord, Status

KEY = "fgsm(eps=0.1)"
N = 40


def _record(member, example, clean, adv, text=None, model="m"):
    return AttackRecord(run="r", task="vqa", dataset="easy-vqa", member=member, model=model, attack="fgsm",
                        attack_key=KEY, modality="image", eps=0.1, example_id=example, answers=("yes",),
                        text=text or f"question {example}?", adv_text=text or f"question {example}?", clean_prediction="yes",
                        adv_prediction="yes" if adv else "no", clean_score=float(clean), adv_score=float(adv),
                        status=Status.FAILED if adv else Status.SUCCEEDED)


def _member(member, broken: int, offset: int = 0):
    """Records of one member: every example right clean, the attack breaks ``broken`` of N (from ``offset``)."""
    return [_record(member, f"e{i}", 1, not (offset <= i < offset + broken)) for i in range(N)]


def test_hierarchical_bootstrap_reduces_to_the_paired_one_and_widens_with_the_seed_spread():
    rng = np.random.default_rng(0)
    a, b = rng.random(N), rng.random(N) + 0.2
    assert metrics.hierarchical_bootstrap_ci([a], [b]) == pytest.approx(metrics.paired_bootstrap_ci(b, a))
    # three models per group with the same mean difference: agreeing seeds vs seeds that disagree
    agree = metrics.hierarchical_bootstrap_ci([a, a, a], [b, b, b])
    spread = metrics.hierarchical_bootstrap_ci([a - 0.3, a, a + 0.3], [b, b, b])
    assert spread[1] - spread[0] > 2 * (agree[1] - agree[0])
    with pytest.raises(ValueError):
        metrics.hierarchical_bootstrap_ci([a], [b[:10]])


def test_pooled_numbers_are_recomputed_from_every_members_records():
    prompts = [("p1", _member("prompt", 20)), ("p2", _member("prompt", 30, 5)), ("p3", _member("prompt", 10, 2))]
    finetunes = [("f1", _member("finetune", 2)), ("f2", _member("finetune", 12, 1))]
    members = members_of([], prompts, finetunes)
    assert [m.label for m in members] == ["P1", "P2", "P3", "F1", "F2"]
    (c,) = pool_members(members)[0]
    assert c.n == N and c.prompt_drops == pytest.approx((0.5, 0.75, 0.25)) and c.finetune_drops == pytest.approx((0.05, 0.3))
    assert c.drop_difference == pytest.approx((0.05 + 0.3) / 2 - (0.5 + 0.75 + 0.25) / 3)
    assert c.pairings == 6
    # a pairing is significant on its own when its paired CI excludes 0, as `robustmm attack` reports one pair
    drops = {label: [1 - r.adv_score for r in records] for label, records in prompts + finetunes}
    own = [metrics.paired_bootstrap_ci(drops[f], drops[p]) for p, _ in prompts for f, _ in finetunes]
    assert c.pairings_for_finetune == sum(high < 0 for _, high in own) and c.pairings_for_prompt == 0
    assert c.drop_difference_ci == pytest.approx(metrics.hierarchical_bootstrap_ci(
        [drops[p] for p, _ in prompts], [drops[f] for f, _ in finetunes]))
    assert c.significant == (c.drop_difference_ci[1] < 0)


def test_a_model_listed_twice_other_data_or_a_missing_member_is_refused():
    p, f = _member("prompt", 20), _member("finetune", 2)
    with pytest.raises(RobustMMError, match="identical records on easy-vqa"):
        pool_members(members_of([("run1", p + f), ("run2", _member("prompt", 25) + f)]))
    other = [_record("finetune", f"e{i}", 1, 1, text="another question?") for i in range(N)]
    with pytest.raises(RobustMMError, match="different inputs"):
        pool_members(members_of([("run1", p + f)], finetune_from=[("run2", other)]))
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
    assert "| fgsm | 25.5/255 | 50 / 75 / 25 | 5 / 10 / 0 | -45.0 [" in report
    assert "| P2 | `seed1/prompt` | 100.0% (40) |" in report
    data = json.loads((tmp_path / "pool-seed0+seed1+seed2.json").read_text())
    assert [m["label"] for m in data["members"]] == ["P1", "P2", "P3", "F1", "F2", "F3"]
    assert data["settings"][0]["pairings"] == 9 and data["settings"][0]["significant"] is True

    for args, message in (((), "Give run folders to pool"),
                          ((folders[0], tmp_path / "nope"), "has no records.jsonl"),
                          ((folders[0], "--finetune-from", folders[0]), "identical records"),
                          ((*folders, "--out", tmp_path / "x.txt"), "must name a .md file")):
        bad = _cli(*args)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "x.txt").exists()
