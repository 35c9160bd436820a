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
    absolute_drop,
    answer_score,
    attack_success_rate,
    bootstrap_ci,
    exact_match,
    mcnemar,
    mean,
    normalize_answer,
    paired_bootstrap_ci,
    relative_drop,
    robust_accuracy,
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
# robustness building blocks
# ---------------------------------------------------------------------------


def test_mean_and_robust_accuracy():
    assert mean([1.0, 0.0, 0.5, 0.5]) == 0.5
    assert math.isnan(mean([]))
    assert robust_accuracy([1.0, 0.3, 0.0, 0.9]) == pytest.approx(0.55)


def test_attack_success_rate():
    # 3 clean-correct examples, the attack flips 2 of them; the clean-wrong one does not count
    assert attack_success_rate([True, True, True, False], [False, True, False, True]) == pytest.approx(2 / 3)
    assert attack_success_rate([True, True], [True, True]) == 0.0
    assert attack_success_rate([True, True], [False, False]) == 1.0
    assert math.isnan(attack_success_rate([False, False], [False, True]))  # nothing right to attack
    with pytest.raises(ValueError):
        attack_success_rate([True, False], [True])


def test_drops():
    assert absolute_drop(0.8, 0.5) == pytest.approx(0.3)
    assert relative_drop(0.8, 0.5) == pytest.approx(0.375)  # 0.3 / 0.8
    assert relative_drop(0.5, 0.5) == 0.0
    assert absolute_drop(0.4, 0.6) == pytest.approx(-0.2)  # robust above clean: negative drop
    assert math.isnan(relative_drop(0.0, 0.0))


# ---------------------------------------------------------------------------
# bootstrap confidence intervals
# ---------------------------------------------------------------------------


def test_bootstrap_ci_contains_the_mean_and_is_deterministic():
    values = [1.0] * 30 + [0.0] * 20  # mean 0.6
    low, high = bootstrap_ci(values, n_resamples=500, seed=3)
    assert low < 0.6 < high
    assert 0.0 <= low and high <= 1.0
    assert bootstrap_ci(values, n_resamples=500, seed=3) == (low, high)
    assert bootstrap_ci(values, n_resamples=500, seed=4) != (low, high)


def test_bootstrap_ci_narrows_with_more_data():
    small = [1.0] * 12 + [0.0] * 8  # n = 20, mean 0.6
    large = small * 20  # n = 400, same mean
    s_low, s_high = bootstrap_ci(small, n_resamples=500, seed=0)
    l_low, l_high = bootstrap_ci(large, n_resamples=500, seed=0)
    assert l_low < 0.6 < l_high
    # the width shrinks roughly with sqrt(n): sqrt(20/400) ~ 0.22; allow slack
    assert (l_high - l_low) < 0.5 * (s_high - s_low)


def test_bootstrap_ci_edge_cases():
    assert all(math.isnan(x) for x in bootstrap_ci([]))
    assert bootstrap_ci([0.7] * 10, n_resamples=50) == pytest.approx((0.7, 0.7))
    wide = bootstrap_ci([0.0, 1.0] * 25, n_resamples=400, confidence=0.99, seed=1)
    narrow = bootstrap_ci([0.0, 1.0] * 25, n_resamples=400, confidence=0.5, seed=1)
    assert wide[0] <= narrow[0] <= 0.5 <= narrow[1] <= wide[1]


def test_bootstrap_ci_custom_statistic():
    import statistics

    values = [0.0, 0.0, 1.0, 1.0, 1.0, 5.0, 5.0]
    low, high = bootstrap_ci(values, statistic=statistics.median, n_resamples=200, seed=0)
    assert low <= statistics.median(values) <= high
    assert bootstrap_ci(values, statistic=statistics.median, n_resamples=200, seed=0) == (low, high)


def test_paired_bootstrap_ci():
    a = [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0] * 5
    b = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0] * 5
    low, high = paired_bootstrap_ci(a, b, n_resamples=500, seed=0)
    diff = mean(a) - mean(b)  # 6/8 - 3/8 = 0.375
    assert diff == 0.375 and low <= diff <= high and low > 0
    assert paired_bootstrap_ci(a, b, n_resamples=500, seed=0) == (low, high)
    # identical models: every resampled difference is 0
    assert paired_bootstrap_ci(a, a, n_resamples=100) == (0.0, 0.0)
    # A always right, B always wrong: the difference is 1 in every resample
    assert paired_bootstrap_ci([1.0] * 9, [0.0] * 9, n_resamples=100) == (1.0, 1.0)
    with pytest.raises(ValueError):
        paired_bootstrap_ci([1.0, 0.0], [1.0])


def test_paired_bootstrap_is_narrower_than_unpaired_for_correlated_models():
    # B = A except on 4 of 80 examples: the paired difference hardly varies across resamples
    a = [1.0, 0.0] * 40
    b = list(a)
    for i in (0, 2, 4, 6):
        b[i] = 0.0
    low, high = paired_bootstrap_ci(a, b, n_resamples=500, seed=0)
    a_low, a_high = bootstrap_ci(a, n_resamples=500, seed=0)
    assert (high - low) < (a_high - a_low)


# ---------------------------------------------------------------------------
# McNemar's exact test
# ---------------------------------------------------------------------------


def pairs(a_only: int, b_only: int, both: int = 0, neither: int = 0) -> tuple[list[bool], list[bool]]:
    a = [True] * a_only + [False] * b_only + [True] * both + [False] * neither
    b = [False] * a_only + [True] * b_only + [True] * both + [False] * neither
    return a, b


@pytest.mark.parametrize(
    "a_only, b_only, expected",
    [
        (0, 5, 0.0625),  # n=5, k=0: 2 * C(5,0)/2^5 = 2/32
        (5, 0, 0.0625),  # symmetric
        (1, 5, 0.21875),  # n=6, k=1: 2 * (1 + 6)/64 = 14/64
        (0, 10, 0.001953125),  # n=10, k=0: 2 * 1/1024
        (2, 8, 0.109375),  # n=10, k=2: 2 * (1 + 10 + 45)/1024 = 112/1024
        (3, 3, 1.0),  # n=6, k=3: 2 * (1 + 6 + 15 + 20)/64 = 84/64 -> capped at 1
        (1, 0, 1.0),  # n=1, k=0: 2 * 1/2 = 1
    ],
)
def test_mcnemar_exact_p_values(a_only, b_only, expected):
    a, b = pairs(a_only, b_only, both=7, neither=4)  # concordant pairs do not matter
    result = mcnemar(a, b)
    assert result["a_only"] == a_only and result["b_only"] == b_only
    assert result["p_value"] == pytest.approx(expected)


def test_mcnemar_no_discordant_pairs():
    a, b = pairs(0, 0, both=5, neither=3)
    assert mcnemar(a, b) == {"a_only": 0, "b_only": 0, "p_value": 1.0}
    assert mcnemar([], []) == {"a_only": 0, "b_only": 0, "p_value": 1.0}


def test_mcnemar_length_mismatch():
    with pytest.raises(ValueError):
        mcnemar([True, False], [True])


def test_answer_score_single_gold_answer_is_exact_match_after_the_official_strip():
    # easy-VQA has one gold answer; the leave-one-out rule would always give 0. One answer is
    # unanimous, so as in the official 2021 rule only the strip applies.
    assert answer_score(" circle\n", ["circle"], "vqa") == 1.0
    assert answer_score("Circle", ["circle"], "vqa") == 0.0
    assert answer_score("triangle", ["circle"], "vqa") == 0.0
