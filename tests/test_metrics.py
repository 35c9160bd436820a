"""Metric functions, checked against the official VQA evaluation and hand-computed values.

VQA accuracy follows GT-Vision-Lab/VQA ``vqaEval.py`` as of the 2021-03-11 fix (see
``robustmm.metrics.vqa_accuracy``): every answer is stripped; only when the ten human answers are
not all the same string are the prediction *and* the human answers normalised (punctuation, then
lower-case / number words / articles / contractions); the score is the mean over the 10
leave-one-out subsets of min(1, matches/3). With 10 answers, m matching answers give
    m = 1: 9 subsets see 1 match, 1 sees 0          -> 9 * (1/3) / 10            = 0.3
    m = 2: 8 subsets see 2, 2 see 1                 -> (8 * 2/3 + 2 * 1/3) / 10  = 0.6
    m = 3: 7 subsets see 3, 3 see 2                 -> (7 * 1 + 3 * 2/3) / 10    = 0.9
    m >= 4: every subset sees >= 3                  -> 1.0
The vectors in ``tests/data/vqa_official_vectors.json`` come from running the official code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from robustmm.metrics import (
    CORRECT_THRESHOLD,
    accuracy,
    answer_score,
    attack_success_rate,
    exact_match,
    is_correct,
    normalize_answer,
    relative_drop,
    vqa_accuracy,
)
from robustmm.types import Task

OFFICIAL = json.loads((Path(__file__).parent / "data" / "vqa_official_vectors.json").read_text(encoding="utf-8"))


def tenfold(answer: str, m: int, filler: str = "other") -> list[str]:
    """``m`` copies of ``answer`` and ``10 - m`` of ``filler`` (so the ten are not all identical)."""
    return [answer] * m + [filler] * (10 - m)


# ---------------------------------------------------------------------------
# VQA accuracy: equal to the official 2021 code on its own outputs
# ---------------------------------------------------------------------------


def test_the_vectors_come_from_the_2021_official_revision():
    assert "a013f0043c1e2cdc995922dfe257f7149aa9af06" in OFFICIAL["source"] and len(OFFICIAL["vectors"]) >= 70


@pytest.mark.parametrize("case", OFFICIAL["vectors"], ids=lambda c: repr(c["prediction"])[:24] + "|" + repr(c["answers"][0])[:12])
def test_vqa_accuracy_equals_the_official_evaluation(case):
    assert vqa_accuracy(case["prediction"], case["answers"]) == pytest.approx(case["score"], abs=1e-6)


# ---------------------------------------------------------------------------
# VQA accuracy: the leave-one-out average and the 2021 rule, explained
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("m, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (5, 1.0), (9, 1.0)])
def test_vqa_accuracy_m_matches_of_ten(m, expected):
    # see the module docstring for the leave-one-out arithmetic
    assert vqa_accuracy("yes", tenfold("yes", m, "no")) == pytest.approx(expected)


def test_vqa_accuracy_fewer_answers():
    # 3 answers ["cat", "cat", "dog"], prediction "cat": leaving out a "cat" leaves 1 match (1/3),
    # twice; leaving out "dog" leaves 2 matches (2/3) -> (1/3 + 1/3 + 2/3) / 3 = 4/9
    assert vqa_accuracy("cat", ["cat", "cat", "dog"]) == pytest.approx(4 / 9)
    # a single answer: the only leave-one-out subset is empty -> 0 matches -> 0
    assert vqa_accuracy("red", ["red"]) == 0.0


def test_vqa_accuracy_needs_answers():
    with pytest.raises(ValueError):
        vqa_accuracy("yes", [])


def test_unanimous_answers_are_compared_verbatim_after_stripping():
    # ten identical answers: no normalisation on either side, only the strip
    assert vqa_accuracy("two", ["two"] * 10) == 1.0
    assert vqa_accuracy("2", ["two"] * 10) == 0.0 and vqa_accuracy("two", ["2"] * 10) == 0.0
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0 and vqa_accuracy("yes.", ["yes"] * 10) == 0.0
    assert vqa_accuracy(" yes\n", ["yes"] * 10) == 1.0 and vqa_accuracy("yes", [" yes "] * 10) == 1.0


def test_split_answers_normalise_prediction_and_humans_alike():
    # nine "two" + one "2": both sides normalised, "two" -> "2" everywhere -> 10 matches -> 1.0
    assert vqa_accuracy("2", ["two"] * 9 + ["2"]) == 1.0
    # humans are lower-cased and stripped of articles too (the pre-2021 code did neither)
    assert vqa_accuracy("YES", ["Yes"] * 9 + ["yes"]) == 1.0
    assert vqa_accuracy("dog", ["the dog"] * 5 + ["cat"] * 5) == 1.0
    # contractions expand on both sides: "dont" and "don't" meet
    assert vqa_accuracy("dont", ["don't"] * 5 + ["no"] * 5) == 1.0


def test_normalisation_steps():
    assert normalize_answer(" a  big\tred \n dog ") == "big red dog"
    assert normalize_answer("one two") == "1 2" and normalize_answer("twenty") == "twenty"
    assert normalize_answer("Cant") == "can't" and normalize_answer("can't") == "can't"
    assert normalize_answer("hot-dog") == "hot dog"  # a mark touching no space becomes a space
    assert normalize_answer("red,white, blue") == "redwhite blue"  # ", " occurs: every comma is deleted
    assert normalize_answer("1,000") == "1000" and normalize_answer("t-shirt 1,2") == "tshirt 12"  # digit,digit
    assert normalize_answer("10:30") == "10:30"  # ":" is not official punctuation
    assert normalize_answer("yes.") == "yes" and normalize_answer("3.5") == "3.5" and normalize_answer("3.") == "3"
    assert normalize_answer("." * 40 + "yes") == "." * 8 + "yes"  # re.UNICODE passed as count: 32 periods at most


# ---------------------------------------------------------------------------
# other per-example scores
# ---------------------------------------------------------------------------


def test_exact_match():
    assert exact_match(" Entailment ", "entailment") == 1.0
    assert exact_match("neutral", "entailment") == 0.0
    assert exact_match("contradiction\n", "CONTRADICTION") == 1.0


def test_answer_score_dispatches_on_task():
    assert answer_score("2", ["2"] * 10, Task.VQA) == 1.0
    assert answer_score("two", ["2"] * 9 + ["two"], "vqa") == 1.0
    assert answer_score("two", ["2"] * 10, "vqa") == 0.0  # unanimous answers are compared verbatim
    assert answer_score("Neutral", ["neutral"], Task.VE) == 1.0
    assert answer_score("neutral", ["entailment"], "ve") == 0.0


# ---------------------------------------------------------------------------
# one definition of correct, accuracy, success rate
# ---------------------------------------------------------------------------


def test_one_correctness_threshold():
    # VQA v2: >= 0.5 means at least two of ten annotators (scores 0.6, 0.9, 1.0); 0.3 (one annotator) is not correct
    assert CORRECT_THRESHOLD == 0.5
    assert [is_correct(s) for s in (0.0, 0.3, 0.5, 0.6, 0.9, 1.0)] == [False, False, True, True, True, True]
    assert accuracy([1.0, 0.3, 0.6, 0.0]) == 0.5
    assert math.isnan(accuracy([]))


def test_attack_success_rate():
    # 3 clean-correct examples, the attack flips 2 of them; the clean-wrong one does not count
    assert attack_success_rate([True, True, True, False], [False, True, False, True]) == pytest.approx(2 / 3)
    assert attack_success_rate([True, True], [True, True]) == 0.0
    assert attack_success_rate([True, True], [False, False]) == 1.0
    assert math.isnan(attack_success_rate([False, False], [False, True]))  # nothing right to attack
    with pytest.raises(ValueError):
        attack_success_rate([True, False], [True])


def test_relative_drop():
    assert relative_drop(0.8, 0.5) == pytest.approx(0.375)  # 0.3 / 0.8
    assert relative_drop(0.5, 0.5) == 0.0
    assert math.isnan(relative_drop(0.0, 0.0))


def test_answer_score_single_gold_answer_is_exact_match_after_the_official_strip():
    # easy-VQA has one gold answer; the leave-one-out rule would always give 0. One answer is
    # unanimous, so as in the official 2021 rule only the strip applies.
    assert answer_score(" circle\n", ["circle"], "vqa") == 1.0
    assert answer_score("Circle", ["circle"], "vqa") == 0.0
    assert answer_score("triangle", ["circle"], "vqa") == 0.0
