"""Statistics for paired comparisons: exact McNemar test and the interval that inverts it, Holm's
adjustment, the minimum detectable difference, bootstrap intervals, a two-level bootstrap over
training runs, Welch's test, and an anytime-valid confidence sequence for sequential sampling.

Pure functions over numbers; nothing here knows about records or models.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

Z_80 = 0.8416212335729143  # standard normal quantile of 0.80 (80% power)


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; NaN for an empty sequence."""
    return sum(values) / len(values) if len(values) else float("nan")


# ---------------------------------------------------------------------------
# McNemar on paired binary outcomes
# ---------------------------------------------------------------------------


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (one member's outcome only,
    the other's only): ``min(1, 2 * P(X <= min(b, c)))`` with X ~ Binomial(b + c, 1/2); 1.0 when b + c = 0."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval of a binomial proportion, ``k`` successes of ``n``; (0, 1) if n = 0."""
    from scipy.stats import beta

    if n == 0:
        return (0.0, 1.0)
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return (low, high)


def _tango_z(first_only: int, second_only: int, n: int, delta: float) -> float:
    """Tango's (1998) score statistic for H0: (first_only - second_only) / n = ``delta`` in a paired 2x2 table,
    with the restricted maximum-likelihood estimate of P(second only) under H0. At delta = 0 it is
    McNemar's z = (first_only - second_only) / sqrt(first_only + second_only)."""
    b, c = first_only, second_only
    w = -b - c + (2 * n - b + c) * delta
    q = (math.sqrt(max(w * w + 8 * n * c * delta * (1 - delta), 0.0)) - w) / (4 * n)
    variance = n * (2 * q + delta * (1 - delta))
    gap = b - c - n * delta
    if variance <= 0:
        return math.copysign(math.inf, gap) if gap else 0.0
    return gap / math.sqrt(variance)


def tango_interval(b: int, c: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Tango's (1998) asymptotic score interval for the paired difference (c - b) / n (``b`` pairs with the
    event for the first member only, ``c`` for the second only): the differences its score test does not
    reject at 1 - ``confidence``, found by bisection. NaNs for n = 0."""
    from scipy.stats import norm

    if n == 0:
        return (float("nan"), float("nan"))
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    estimate = (c - b) / n

    def bound(inside: float, outside: float, rejects) -> float:
        if not rejects(outside):
            return outside
        for _ in range(80):
            middle = (inside + outside) / 2
            inside, outside = (inside, middle) if rejects(middle) else (middle, outside)
        return inside

    low = bound(estimate, -1.0 + 1e-12, lambda d: _tango_z(c, b, n, d) > z)
    high = bound(estimate, 1.0 - 1e-12, lambda d: _tango_z(c, b, n, d) < -z)
    return (max(low, -1.0), min(high, 1.0))


def mcnemar_difference_ci(b: int, c: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Interval for the paired difference (c - b) / n that agrees with the exact McNemar test.

    ``n`` paired examples, ``b`` with an event (e.g. broken by the attack) for the first member only and
    ``c`` for the second only. The interval is Tango's (1998) score interval for a difference of paired
    proportions (the set of differences its score test does not reject; near-nominal coverage, which
    the conditional interval that scales a Clopper-Pearson interval by the observed discordant share
    lacks), widened to include 0 whenever the exact McNemar test does not reject at 1 - ``confidence``.
    So it excludes 0 exactly when :func:`mcnemar_p` < 1 - ``confidence``: the asymptotic score test at 0
    is McNemar's z without continuity correction, never more conservative than the exact test (checked
    on every split of up to 80 discordant pairs in n = 20 to 500: the exact test never rejected where
    the score interval held 0). Coverage measured by simulation: 94-97% at 95%.
    """
    low, high = tango_interval(b, c, n, confidence)
    if n == 0:
        return (low, high)
    estimate = (c - b) / n
    if mcnemar_p(b, c) >= 1 - confidence:
        low, high = min(low, 0.0), max(high, 0.0)
    elif low <= 0.0 <= high:  # not seen in the grid above; keep the test's verdict if it ever happens
        low, high = (max(low, 1e-12), high) if estimate > 0 else (low, min(high, -1e-12))
    return (low, high)


def mcnemar_mdd(n: int, discordant_share: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable difference of a paired binary comparison at ``power`` for a two-sided test at ``alpha``.

    Connor's (1987) sample-size relation for McNemar's test, solved for the difference delta:
    ``n delta^2 = (z_{1-alpha/2} sqrt(psi) + z_power sqrt(psi - delta^2))^2``, where psi is the share of
    discordant pairs under the alternative, taken as ``max(discordant_share, delta, 1/n)`` (a difference
    delta needs at least that many discordant pairs). Returns delta in (0, 1]; NaN for n = 0.
    """
    from scipy.stats import norm

    if n <= 0:
        return float("nan")
    z_a, z_b = float(norm.ppf(1 - alpha / 2)), float(norm.ppf(power))

    def detectable(delta: float) -> bool:
        psi = min(1.0, max(discordant_share, delta, 1.0 / n))
        return n * delta**2 >= (z_a * math.sqrt(psi) + z_b * math.sqrt(max(psi - delta**2, 0.0))) ** 2

    low, high = 0.0, 1.0
    if not detectable(high):
        return 1.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (low, middle) if detectable(middle) else (middle, high)
    return high


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): controls the family-wise error rate."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


# ---------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------


def bootstrap_ci(
    values: Sequence[float],
    statistic: Callable[[Sequence[float]], float] = mean,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``statistic(values)``; (nan, nan) if empty."""
    import numpy as np

    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, data.size, size=(n_resamples, data.size))
    if statistic is mean:
        stats = data[idx].mean(axis=1)
    else:
        stats = np.array([statistic(data[row]) for row in idx])
    alpha = (1.0 - confidence) / 2.0
    return (float(np.quantile(stats, alpha)), float(np.quantile(stats, 1.0 - alpha)))


def paired_bootstrap_ci(
    a: Sequence[float], b: Sequence[float], n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap CI of mean(a) - mean(b) resampling the *same* examples for both (paired)."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    return bootstrap_ci(diffs, mean, n_resamples, confidence, seed)


def hierarchical_bootstrap(
    a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], n_resamples: int = 4000, confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Two-level bootstrap of mean(b) - mean(a) over two groups of models measured on the same N examples:
    (CI low, CI high, two-sided p-value).

    ``a`` (n_a, N) and ``b`` (n_b, N) hold one row of per-example values per model (e.g. one
    training seed each). Each resample draws models with replacement within each group, and
    examples with replacement (the same examples for every model), so the interval covers both
    the spread between training runs and the sampling of examples (a "hierarchical" bootstrap).
    The p-value is ``2 min(P*(stat <= 0), P*(stat >= 0))`` over the same resamples, so it is below
    1 - ``confidence`` exactly when the percentile interval excludes 0 (up to quantile interpolation).
    With one model per group it reduces to a paired bootstrap of b vs a.
    """
    import numpy as np

    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.ndim != 2 or b_arr.ndim != 2 or a_arr.shape[1] != b_arr.shape[1] or a_arr.size == 0 or b_arr.size == 0:
        raise ValueError(f"Expected two (models, examples) arrays over the same examples, got {a_arr.shape} and {b_arr.shape}.")
    rng = np.random.default_rng(seed)
    n = a_arr.shape[1]
    # example weights (R, N): how often each example is drawn in each resample, over N
    weights = np.stack([np.bincount(row, minlength=n) for row in rng.integers(0, n, size=(n_resamples, n))]) / n

    def group_means(values):
        models = rng.integers(0, values.shape[0], size=(n_resamples, values.shape[0]))  # (R, n_models)
        per_model = weights @ values.T  # (R, n_models): each model's mean over the resampled examples
        return np.take_along_axis(per_model, models, axis=1).mean(axis=1)

    stats = group_means(b_arr) - group_means(a_arr)
    alpha = (1.0 - confidence) / 2.0
    p = min(1.0, 2.0 * min(float(np.mean(stats <= 0)), float(np.mean(stats >= 0))))
    return (float(np.quantile(stats, alpha)), float(np.quantile(stats, 1.0 - alpha)), p)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test of mean(b) = mean(a) with the runs as the units; NaN with fewer
    than 2 values in a group; 1.0 when both groups have no spread and equal means."""
    from scipy.stats import ttest_ind

    if len(a) < 2 or len(b) < 2:
        return float("nan")
    if len(set(a)) == 1 and len(set(b)) == 1:
        return 1.0 if a[0] == b[0] else 0.0
    return float(ttest_ind(list(b), list(a), equal_var=False).pvalue)


# ---------------------------------------------------------------------------
# Sequential sampling: an anytime-valid confidence sequence
# ---------------------------------------------------------------------------


def confidence_sequence(values: Sequence[float], alpha: float = 0.05, low: float = -1.0, high: float = 1.0
                        ) -> tuple[float, float]:
    """Anytime-valid (1 - alpha) confidence interval for the mean of i.i.d. values in [``low``, ``high``]
    after seeing ``values`` in order: the predictable plug-in empirical-Bernstein confidence sequence
    (PrPl-EB, Waudby-Smith & Ramdas 2024, "Estimating means of bounded random variables by betting",
    JRSS-B 86(1), Thm. 2), intersected over time.

    Its coverage holds simultaneously over every sample size, so a run may look at it after every
    round of examples and stop as soon as it is narrow enough without inflating the error rate (a
    fixed-n interval looked at repeatedly would not). Returns (lower, upper) on the values' scale;
    (low, high) before any value.
    """
    scale = high - low
    log_term = math.log(2.0 / alpha)
    total, sum_sq = 0.0, 0.0  # running sums for the plug-in mean and variance
    weighted, weights, penalty = 0.0, 0.0, 0.0
    lower, upper = 0.0, 1.0
    for t, raw in enumerate(values, start=1):
        x = (float(raw) - low) / scale
        mu_prev = (0.5 + total) / t  # mean estimate from the first t - 1 values (t - 1 + 1 pseudo-count)
        var_prev = (0.25 + sum_sq) / t
        lam = min(math.sqrt(2.0 * log_term / (var_prev * t * math.log(1.0 + t))), 0.5)
        psi = (-math.log(1.0 - lam) - lam) / 4.0
        weighted += lam * x
        weights += lam
        penalty += 4.0 * (x - mu_prev) ** 2 * psi
        centre, radius = weighted / weights, (log_term + penalty) / weights
        lower, upper = max(lower, centre - radius), min(upper, centre + radius)
        total += x
        mu_now = (0.5 + total) / (t + 1)
        sum_sq += (x - mu_now) ** 2
    if lower > upper:  # possible only by chance of the intersection; report the point where they crossed
        lower = upper = (lower + upper) / 2
    return (low + scale * lower, low + scale * upper)
