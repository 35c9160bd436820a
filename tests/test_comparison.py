"""The one paired comparison behind every verdict, checked on hand-made records against hand-computed numbers."""

from __future__ import annotations

import pytest

from records import make_record, rows
from robustmm.comparison import adjust_holm, compare, compare_groups
from robustmm.statistics import mcnemar_difference_ci, mcnemar_p
from robustmm.summary import summarize

# 10 examples. Prompt-tuned: right clean on all but e9; finetuned: right on all but e8.
# Under attack: prompt broken on e0, e1; finetuned broken on e0, e2, e3, e4, e5.
PROMPT = [(1, 0), (1, 0), (1, 1), (1, 1), (1, 1), (1, 1), (1, 1), (1, 1), (1, 1), (0, 0)]
FINETUNE = [(1, 0), (1, 1), (1, 0), (1, 0), (1, 0), (1, 0), (1, 1), (1, 1), (0, 0), (1, 1)]


def test_the_headline_is_attack_success_on_the_examples_both_answer_correctly():
    c = compare(rows("prompt", PROMPT), rows("finetune", FINETUNE), ("prompt-tuned", "finetuned"))
    # both correct clean: e0..e7 (8 examples); broken there: prompt {e0, e1} = 2/8, finetuned {e0, e2..e5} = 5/8
    assert c.n == 10 and c.n_both_correct == 8
    assert c.a.asr == pytest.approx(2 / 8) and c.b.asr == pytest.approx(5 / 8)
    assert (c.only_a_broken, c.only_b_broken) == (1, 4)  # e1 / e2..e5
    assert c.difference == pytest.approx(3 / 8)
    assert c.p_value == pytest.approx(mcnemar_p(1, 4)) and c.p_value == pytest.approx(0.375)
    assert c.ci == pytest.approx(mcnemar_difference_ci(1, 4, 8))
    # clean and robust accuracy over all 10 examples
    assert c.a.clean_accuracy == pytest.approx(0.9) and c.b.clean_accuracy == pytest.approx(0.9)
    # correct under attack: prompt e2..e8 (7), finetuned e1, e6, e7, e9 (4)
    assert c.a.robust_accuracy == pytest.approx(0.7) and c.b.robust_accuracy == pytest.approx(0.4)
    assert c.robust_difference == pytest.approx(0.3) and c.clean_difference == pytest.approx(0.0)
    assert c.outcome == "tie"  # p = 0.375: no detectable difference


def test_a_decided_setting_needs_a_holm_adjusted_p_below_alpha_and_half_a_point():
    broken_for_finetune_only = [(1, 1)] * 30 + [(1, 1)] * 70
    finetuned = [(1, 0)] * 30 + [(1, 1)] * 70
    strong = compare(rows("prompt", broken_for_finetune_only), rows("finetune", finetuned))
    assert strong.p_value == pytest.approx(2 / 2**30) and strong.outcome == "a"  # a (prompt-tuned) broken less
    weak_rows = [(1, 1)] * 100
    weak = compare(rows("prompt", weak_rows), rows("finetune", [(1, 0)] * 5 + [(1, 1)] * 95))
    assert weak.p_value == pytest.approx(0.0625) and weak.outcome == "tie"
    # Holm over a family of the two: p-values sorted 2^-29, 0.0625 -> x2 and x1
    family = adjust_holm([strong, weak])
    assert sorted(c.p_holm for c in family) == pytest.approx([2 * 2 / 2**30, 0.0625])
    assert {c.family_size for c in family} == {2}


def test_a_clean_accuracy_gap_wider_than_the_robust_ci_is_flagged():
    prompt = [(1, 1)] * 50 + [(0, 0)] * 50  # 50% clean
    finetune = [(1, 1)] * 100  # 100% clean
    c = compare(rows("prompt", prompt), rows("finetune", finetune))
    assert c.clean_difference == pytest.approx(-0.5) and c.confounded
    assert not compare(rows("prompt", finetune), rows("finetune", finetune)).confounded


def test_summary_pairs_members_by_example_and_adjusts_per_dataset():
    records = rows("prompt", PROMPT) + rows("finetune", FINETUNE)
    records += rows("prompt", PROMPT, key="pgd-linf(eps=8/255)") + rows("finetune", FINETUNE, key="pgd-linf(eps=8/255)")
    records += rows("prompt", PROMPT, dataset="easy-ve") + rows("finetune", FINETUNE, dataset="easy-ve")
    records.append(make_record("prompt", "extra", 1, 1))  # held by one member only: not compared
    summary = summarize(records)
    vqa = summary.for_dataset("vqa", "easy-vqa")
    assert len(vqa) == 2 and all(c.family_size == 2 for c in vqa) and all(c.n == 10 for c in vqa)
    assert all(c.p_holm == pytest.approx(min(1.0, 2 * 0.375)) for c in vqa)
    assert summary.for_dataset("vqa", "easy-ve")[0].family_size == 1
    assert "no detectable difference under 2" in summary.task_verdict("vqa", "easy-vqa")


def test_pooled_groups_use_the_members_as_units():
    p1 = rows("prompt", [(1, 0)] * 10 + [(1, 1)] * 30, model="p1")  # ASR 10/40
    p2 = rows("prompt", [(1, 0)] * 14 + [(1, 1)] * 26, model="p2")  # 14/40
    f1 = rows("finetune", [(1, 0)] * 30 + [(1, 1)] * 10, model="f1")  # 30/40
    f2 = rows("finetune", [(1, 0)] * 26 + [(1, 1)] * 14, model="f2")  # 26/40
    c = compare_groups([p1, p2], [f1, f2], ("prompt-tuned", "finetuned"))
    assert c.a.members == pytest.approx((0.25, 0.35)) and c.b.members == pytest.approx((0.75, 0.65))
    assert c.difference == pytest.approx(0.7 - 0.3) and c.n_both_correct == 40
    assert c.ci[0] > 0 and c.p_value < 0.05 and c.outcome == "a"
    # an example one member answers wrongly clean leaves the shared both-correct set
    p2[0] = make_record("prompt", "e0", 0, 0, model="p2")
    assert compare_groups([p1, p2], [f1, f2], ("p", "f")).n_both_correct == 39
