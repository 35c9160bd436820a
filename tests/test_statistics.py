"""Statistics: bootstrap intervals, exact McNemar and the interval that inverts it, Holm, the minimum
detectable difference, the two-level bootstrap and the anytime-valid confidence sequence, each checked
against hand-computed values or a simulation of what it promises."""

from __future__ import annotations

import math
import random

import pytest

from robustmm.statistics import (
    bootstrap_ci,
    clopper_pearson,
    confidence_sequence,
    hierarchical_bootstrap,
    holm,
    mcnemar_difference_ci,
    mcnemar_mdd,
    mcnemar_p,
    mean,
    paired_bootstrap_ci,
    tango_interval,
    welch_p,
)


def test_mean():
    assert mean([1.0, 0.0, 0.5, 0.5]) == 0.5
    assert math.isnan(mean([]))


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
# McNemar's exact test and its interval
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "b, c, expected",
    [
        (0, 5, 0.0625),  # n=5, k=0: 2 * C(5,0)/2^5 = 2/32
        (5, 0, 0.0625),  # symmetric
        (1, 5, 0.21875),  # n=6, k=1: 2 * (1 + 6)/64 = 14/64
        (0, 10, 0.001953125),  # n=10, k=0: 2 * 1/1024
        (2, 8, 0.109375),  # n=10, k=2: 2 * (1 + 10 + 45)/1024 = 112/1024
        (3, 3, 1.0),  # n=6, k=3: 2 * (1 + 6 + 15 + 20)/64 = 84/64 -> capped at 1
        (1, 0, 1.0),  # n=1, k=0: 2 * 1/2 = 1
        (0, 0, 1.0),  # no discordant pairs
    ],
)
def test_mcnemar_exact_p_values(b, c, expected):
    assert mcnemar_p(b, c) == pytest.approx(expected)


def test_clopper_pearson_known_values():
    # 0 of 10: upper bound 1 - 0.025**(1/10); 10 of 10: lower bound 0.025**(1/10)
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 1 - 0.025 ** 0.1))
    assert clopper_pearson(10, 10) == pytest.approx((0.025 ** 0.1, 1.0))
    low, high = clopper_pearson(5, 10)
    assert low == pytest.approx(0.187086, abs=1e-5) and high == pytest.approx(0.812914, abs=1e-5)


def test_the_mcnemar_interval_excludes_zero_exactly_when_p_is_below_alpha():
    # one test, one claim: over every discordant split of up to 40 pairs the two never disagree
    for d in range(0, 41):
        for c in range(d + 1):
            b = d - c
            low, high = mcnemar_difference_ci(b, c, 100)
            excludes = low > 0 or high < 0
            assert excludes == (mcnemar_p(b, c) < 0.05), (b, c, low, high, mcnemar_p(b, c))
            assert low <= (c - b) / 100 <= high


def test_the_mcnemar_interval_is_tangos_score_interval_widened_to_the_exact_test():
    # Cavo et al. (2012) as in Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables"
    # (ch. 8; R package contingencytables): table [[59, 6], [16, 80]], N = 161, difference
    # (6 - 16)/161 = -0.0621, Tango 95% CI -0.1240 to -0.0054, exact conditional McNemar P = 0.052479.
    assert tango_interval(16, 6, 161) == pytest.approx((-0.1240, -0.0054), abs=5e-5)
    assert mcnemar_p(16, 6) == pytest.approx(0.052479, abs=5e-7)
    # the exact test does not reject at 0.05, so the reported interval reaches 0 (one test, one claim)
    low, high = mcnemar_difference_ci(16, 6, 161)
    assert low == pytest.approx(-0.1240, abs=5e-5) and high == 0.0
    # no discordant pairs in 50: the interval still has room for a difference (not the point 0)
    low, high = mcnemar_difference_ci(0, 0, 50)
    assert low < 0 < high and high < 0.1


def test_mcnemar_interval_covers_the_true_difference():
    # simulation: paired outcomes with P(only a) = 0.05, P(only b) = 0.15, n = 200; 95% coverage (conservative)
    rng = random.Random(0)
    covered = 0
    for _ in range(400):
        b = c = 0
        for _ in range(200):
            u = rng.random()
            b += u < 0.05
            c += 0.05 <= u < 0.20
        low, high = mcnemar_difference_ci(b, c, 200)
        covered += low <= 0.10 <= high
    assert covered / 400 >= 0.92  # measured 0.94 over 1,000 runs (a conditional interval gives 0.927)


def test_holm_adjustment():
    # sorted 0.01, 0.02, 0.04 with m = 3: 0.03, max(0.03, 0.04) = 0.04, max(0.04, 0.04) = 0.04
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_mdd_shrinks_with_n_and_matches_a_power_simulation():
    assert mcnemar_mdd(400, 0.2) < mcnemar_mdd(100, 0.2) < mcnemar_mdd(25, 0.2)
    assert mcnemar_mdd(100, 0.3, alpha=0.005) > mcnemar_mdd(100, 0.3, alpha=0.05)
    assert math.isnan(mcnemar_mdd(0, 0.2))
    # at the MDD, the exact test rejects about 80% of the time (normal approximation: allow 70-92%)
    n, psi = 300, 0.2
    delta = mcnemar_mdd(n, psi)
    p_b, p_c = (psi - delta) / 2, (psi + delta) / 2
    rng, rejected = random.Random(1), 0
    for _ in range(300):
        b = c = 0
        for _ in range(n):
            u = rng.random()
            b += u < p_b
            c += p_b <= u < p_b + p_c
        rejected += mcnemar_p(b, c) < 0.05
    assert 0.70 <= rejected / 300 <= 0.92


def test_hierarchical_bootstrap_widens_with_disagreeing_runs_and_gives_a_consistent_p():
    examples = 60
    same = [[1.0] * 30 + [0.0] * 30] * 3
    shifted = [[1.0] * 40 + [0.0] * 20] * 3
    low, high, p = hierarchical_bootstrap(same, shifted, seed=0)
    assert low <= 1 / 6 <= high and (p < 0.05) == (low > 0 or high < 0)
    spread = [[1.0] * k + [0.0] * (examples - k) for k in (30, 45, 36)]
    w_low, w_high, w_p = hierarchical_bootstrap(same, spread, seed=0)
    assert (w_high - w_low) > (high - low)
    assert (w_p < 0.05) == (w_low > 0 or w_high < 0)
    with pytest.raises(ValueError):
        hierarchical_bootstrap([[1.0]], [[1.0, 0.0]])


def test_welch_p():
    assert welch_p([0.2, 0.3], [0.2]) != welch_p([0.2, 0.3], [0.2])  # NaN with fewer than 2 per group
    assert welch_p([0.2, 0.2], [0.2, 0.2]) == 1.0
    assert welch_p([0.10, 0.12, 0.11], [0.30, 0.31, 0.29]) < 0.001


# ---------------------------------------------------------------------------
# The anytime-valid confidence sequence
# ---------------------------------------------------------------------------


def test_confidence_sequence_narrows_and_contains_the_mean():
    rng = random.Random(0)
    values = [rng.choice([-1.0, 0.0, 0.0, 1.0, 1.0]) for _ in range(2000)]  # mean 0.2
    low100, high100 = confidence_sequence(values[:100])
    low, high = confidence_sequence(values)
    assert low <= 0.2 <= high and (high - low) < (high100 - low100)
    assert confidence_sequence([]) == (-1.0, 1.0)


def test_confidence_sequence_keeps_its_level_under_repeated_looks():
    # looking after every 25 values and stopping at the first exclusion: a fixed-n interval looked at
    # 40 times would cross a true mean of 0 far more often than 5% of the time; the sequence must not.
    rng = random.Random(2)
    crossed = 0
    for _ in range(200):
        values = []
        for _ in range(40):
            values += [rng.choice([-1.0, 0.0, 1.0]) for _ in range(25)]
            low, high = confidence_sequence(values)
            if low > 0 or high < 0:
                crossed += 1
                break
    assert crossed / 200 <= 0.05
