import math

import numpy as np
import pytest

from scdpo.results import stats
from scdpo.results.stats import PairedResult, accuracy_ci, mcnemar_exact, paired_difference


def _bernoulli(p: float, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(n) < p


def test_interval_contains_true_rate_with_plausible_width():
    acc, low, high = accuracy_ci(_bernoulli(0.3, 2000, seed=1))
    assert low < 0.3 < high
    assert low < acc < high
    # Normal approximation: 2 * 1.96 * sqrt(0.21 / 2000) = 0.040
    assert 0.035 < high - low < 0.045


def test_interval_coverage_is_near_nominal():
    hits = 0
    for seed in range(300):
        _, low, high = accuracy_ci(_bernoulli(0.3, 400, seed), n_boot=2000, seed=seed)
        hits += low <= 0.3 <= high
    assert 0.90 <= hits / 300 <= 0.99


def test_interval_is_deterministic_for_a_seed():
    x = _bernoulli(0.6, 300, seed=2)
    assert accuracy_ci(x, seed=5) == accuracy_ci(x, seed=5)
    assert accuracy_ci(x, seed=5)[1:] != accuracy_ci(x, seed=6)[1:]


def test_degenerate_inputs():
    acc, low, high = accuracy_ci([True] * 100)
    assert acc == 1.0 and high == 1.0 and 0.95 < low < 0.97  # Wilson: 100 / 103.84
    acc, low, high = accuracy_ci([0] * 100)
    assert acc == 0.0 and low == 0.0 and 0.03 < high < 0.05
    assert all(math.isnan(v) for v in accuracy_ci([]))
    with pytest.raises(ValueError):
        accuracy_ci([0, 1, 2])
    with pytest.raises(ValueError):
        accuracy_ci([0, 1], confidence=1.5)


def _planted(n: int, n_right: int, fixes: int, breaks: int, seed: int):
    """a is right on n_right questions; b fixes `fixes` of a's errors and breaks `breaks`."""
    rng = np.random.default_rng(seed)
    a = np.zeros(n, dtype=bool)
    a[:n_right] = True
    b = a.copy()
    b[n_right : n_right + fixes] = True
    b[:breaks] = False
    perm = rng.permutation(n)
    return a[perm], b[perm]


def test_paired_detects_planted_difference():
    a, b = _planted(500, 300, fixes=60, breaks=10, seed=3)
    res = paired_difference(a, b)
    assert isinstance(res, PairedResult)
    assert (res.n_a_only, res.n_b_only, res.n) == (10, 60, 500)
    assert res.diff == pytest.approx(0.1)
    assert res.acc_a == pytest.approx(0.6) and res.acc_b == pytest.approx(0.7)
    assert res.p_value < 0.01
    assert 0 < res.low < 0.1 < res.high


def test_paired_does_not_detect_balanced_discordances():
    a, b = _planted(500, 300, fixes=20, breaks=20, seed=4)
    res = paired_difference(a, b)
    assert res.diff == 0.0
    assert res.p_value > 0.5
    assert res.low < 0 < res.high
    same = paired_difference(a, a)
    assert (same.diff, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_rejects_misaligned_inputs():
    with pytest.raises(ValueError, match="3.*4"):
        paired_difference([1, 0, 1], [1, 0, 1, 1])


def test_paired_sign_and_determinism():
    a, b = _planted(200, 100, fixes=5, breaks=25, seed=5)
    res = paired_difference(a, b, seed=1)
    assert res.diff == pytest.approx(-0.1) and res.high < 0
    assert res == paired_difference(a, b, seed=1)


@pytest.mark.parametrize(
    ("a_only", "b_only", "expected"),
    [
        (0, 0, 1.0),
        (0, 5, 2 / 32),
        (5, 0, 2 / 32),
        (1, 5, 2 * 7 / 64),  # C(6,0) + C(6,1) = 7
        (2, 8, 2 * 56 / 1024),  # 1 + 10 + 45
        (3, 3, 1.0),
        (4, 3, 1.0),
        (1, 1, 1.0),
    ],
)
def test_mcnemar_matches_hand_computed_binomial(a_only, b_only, expected):
    assert mcnemar_exact(a_only, b_only) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_large_counts_close_to_normal_approximation():
    p = mcnemar_exact(1000, 1200)
    z = (200 - 1) / math.sqrt(2200)  # continuity-corrected
    assert 0 < p < 1e-4
    assert p == pytest.approx(math.erfc(z / math.sqrt(2)), rel=0.1)


def test_one_seed_a_side_is_the_paired_bootstrap_and_mcnemar():
    a, b = [[1, 0, 1, 0, 1, 1]], [[1, 1, 1, 0, 1, 1]]
    assert stats.seeded_difference(a, b, n_boot=300) == stats.paired_difference(
        a[0], b[0], n_boot=300
    )
    one = stats.seeded_accuracy(a, n_boot=300)
    assert (one.mean, one.low, one.high) == stats.accuracy_ci(a[0], n_boot=300)
    assert one.seeds == 1 and math.isnan(one.sd)


def test_seed_spread_widens_the_interval_over_items_alone():
    rng = np.random.default_rng(0)
    same = stats.seeded_accuracy([rng.random(400) < 0.5] * 3, n_boot=2000)
    # Seeds far apart (about 35%, 50%, 65% right) add their spread to the items' own.
    varied = stats.seeded_accuracy([rng.random(400) < p for p in (0.35, 0.5, 0.65)], n_boot=2000)
    assert same.sd == 0 and varied.sd > 0.1
    assert varied.high - varied.low > 2 * (same.high - same.low)


def test_seeded_tests_hold_their_level_and_find_a_planted_difference():
    rng = np.random.default_rng(1)
    null = [
        stats.seeded_difference(
            [rng.random(200) < 0.5 for _ in range(3)],
            [rng.random(200) < 0.5 for _ in range(3)],
            n_boot=400,
            seed=i,
        )
        for i in range(60)
    ]
    for p_values in ([r.p_value for r in null], [r.p_seeds_fixed for r in null]):
        assert np.mean(np.array(p_values) < 0.05) <= 0.15  # about 5% under the null
    base = rng.random(300) < 0.5
    better = [base | (rng.random(300) < 0.3) for _ in range(3)]
    planted = stats.seeded_difference([base], better, n_boot=2000)
    assert planted.p_value < 0.01 and planted.p_seeds_fixed < 0.001 and planted.low > 0
    assert planted.test == stats.SEEDS_AND_QUESTIONS


def test_a_gain_of_one_seed_is_not_a_gain_of_the_method():
    """One seed of three fixes 90 questions, two fix none: these three models beat the baseline
    (sign-flip, models fixed), but the seeds disagree, so the interval over seeds and questions
    spans 0 and its p-value says so too."""
    rng = np.random.default_rng(2)
    base = rng.random(600) < 0.5
    wrong = np.flatnonzero(~base)[:90]
    lucky = base.copy()
    lucky[wrong] = True
    result = stats.seeded_difference([base] * 3, [lucky, base, base], n_boot=4000)
    assert result.p_seeds_fixed < 0.001
    assert result.low <= 0 < result.high and result.p_value >= 0.05


def test_the_bootstrap_p_value_agrees_with_the_interval():
    rng = np.random.default_rng(3)
    for shift in (0.0, 0.04, 0.08, 0.15):
        a = [rng.random(400) < 0.5 for _ in range(3)]
        b = [rng.random(400) < 0.5 + shift for _ in range(3)]
        r = stats.seeded_difference(a, b, n_boot=4000, seed=1)
        excludes_zero = r.low > 0 or r.high < 0
        assert excludes_zero == (r.p_value < 0.05) or abs(r.p_value - 0.05) < 0.01, r


def test_power_and_sample_size_invert_each_other():
    n = stats.mcnemar_sample_size(0.03, 0.15)
    assert stats.mcnemar_power(n, 0.03, 0.15) >= 0.8 > stats.mcnemar_power(n - 5, 0.03, 0.15)
    # More discordance (noisier pairs) needs more questions; a bigger difference fewer.
    assert stats.mcnemar_sample_size(0.03, 0.25) > n > stats.mcnemar_sample_size(0.05, 0.15)
    with pytest.raises(ValueError):
        stats.mcnemar_power(100, 0.2, 0.1)
