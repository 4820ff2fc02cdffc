"""Statistics for the accuracy table: bootstrap intervals and paired tests.

Inputs are per-question 0/1 correctness arrays. For 0/1 data a bootstrap resample is fully
described by its counts, so the resampled statistics are drawn from their exact binomial /
multinomial distributions instead of materialising n_boot x n index matrices: the result is
the same percentile bootstrap, in O(n_boot) time and memory.

With several training seeds a model is a (seeds x questions) array. Its intervals come from a
two-level bootstrap that resamples the seeds and the questions (the same questions for both
models of a comparison), and a difference's p-value from the same resamples, so that interval
and test agree: a difference must hold across seeds, not only for the models these seeds gave.
Beside it, a sign-flip randomisation test on the per-question difference of the seed-averaged
outcomes asks the narrower question (these trained models, new questions); both keep the
question as the unit, so pooling seeds never counts a question once per seed. With one seed on
each side both reduce to the paired bootstrap and the exact McNemar test, which are used then.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = [
    "PairedResult",
    "SeededAccuracy",
    "accuracy_ci",
    "mcnemar_exact",
    "mcnemar_power",
    "mcnemar_sample_size",
    "paired_difference",
    "bootstrap_p",
    "seeded_accuracy",
    "seeded_difference",
]

MCNEMAR = "exact McNemar"
SEEDS_AND_QUESTIONS = "bootstrap over seeds and questions"


@dataclass(frozen=True)
class PairedResult:
    """Comparison of model b against model a on the same questions (accuracy units, 0..1)."""

    n: int
    acc_a: float
    acc_b: float
    diff: float  # acc_b - acc_a
    low: float  # paired-bootstrap percentile interval of diff
    high: float
    p_value: float  # two-sided: exact McNemar, or with several seeds the two-level bootstrap's
    n_a_only: float  # discordant: a right, b wrong (with seeds: mean over seed pairings)
    n_b_only: float  # discordant: a wrong, b right
    test: str = MCNEMAR
    p_seeds_fixed: float = math.nan  # with several seeds: sign-flip test, the models as trained


def _as_binary(values: Sequence[bool], name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must contain only 0/1 or booleans")
    return arr.astype(bool)


def _check_args(confidence: float, n_boot: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    lo, hi = np.quantile(samples, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def _wilson(k: int, n: int, confidence: float) -> tuple[float, float]:
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_ci(
    correct: Sequence[bool], confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """Accuracy and its percentile-bootstrap interval: (accuracy, low, high).

    Empty input gives NaNs. All-right / all-wrong input would give a zero-width bootstrap
    interval, which overstates certainty, so the Wilson score interval is returned instead.
    """
    _check_args(confidence, n_boot)
    x = _as_binary(correct, "correct")
    n, k = x.size, int(x.sum())
    if n == 0:
        return math.nan, math.nan, math.nan
    acc = k / n
    if k in (0, n):
        return (acc, *_wilson(k, n, confidence))
    rng = np.random.default_rng(seed)
    boot = rng.binomial(n, acc, size=n_boot) / n
    return (acc, *_percentiles(boot, confidence))


def mcnemar_exact(n_a_only: int, n_b_only: int) -> float:
    """Exact two-sided McNemar p-value: binomial(n_a_only + n_b_only, 1/2) on the discordants.

    Computed with exact integers (Python's int / int division is correctly rounded), so it is
    accurate for any count.
    """
    if n_a_only < 0 or n_b_only < 0:
        raise ValueError("discordant counts must be non-negative")
    n = n_a_only + n_b_only
    if n == 0:
        return 1.0
    tail, term = 0, 1  # term = comb(n, i), updated incrementally
    for i in range(min(n_a_only, n_b_only) + 1):
        tail += term
        term = term * (n - i) // (i + 1)
    return min(1.0, 2 * tail / 2**n)


def paired_difference(
    a: Sequence[bool],
    b: Sequence[bool],
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> PairedResult:
    """Accuracy difference b - a on the same questions, paired bootstrap CI and McNemar test."""
    _check_args(confidence, n_boot)
    xa, xb = _as_binary(a, "a"), _as_binary(b, "b")
    if xa.size != xb.size:
        raise ValueError(
            f"a and b must be aligned on the same questions: len(a)={xa.size}, len(b)={xb.size}"
        )
    n = xa.size
    a_only, b_only = int((xa & ~xb).sum()), int((~xa & xb).sum())
    p_value = mcnemar_exact(a_only, b_only)
    if n == 0:
        return PairedResult(0, math.nan, math.nan, math.nan, math.nan, math.nan, p_value, 0, 0)
    # Only the discordant cells move the difference; resample the three cells jointly.
    pvals = np.array([a_only, b_only, n - a_only - b_only], dtype=float) / n
    counts = np.random.default_rng(seed).multinomial(n, pvals, size=n_boot)
    boot = (counts[:, 1] - counts[:, 0]) / n
    low, high = _percentiles(boot, confidence)
    return PairedResult(
        n=n,
        acc_a=float(xa.mean()),
        acc_b=float(xb.mean()),
        diff=(b_only - a_only) / n,
        low=low,
        high=high,
        p_value=p_value,
        n_a_only=a_only,
        n_b_only=b_only,
    )


@dataclass(frozen=True)
class SeededAccuracy:
    """Accuracy of a model trained with one or more seeds (0..1): the mean over seeds, the
    standard deviation across seeds (NaN for one seed) and the interval over seeds and items."""

    seeds: int
    n: int
    mean: float
    sd: float
    low: float
    high: float
    per_seed: tuple[float, ...]


def _as_seeds(values: Sequence[Sequence[bool]], name: str) -> np.ndarray:
    rows = [_as_binary(row, f"{name}[{i}]") for i, row in enumerate(values)]
    if not rows or len({row.size for row in rows}) != 1:
        raise ValueError(f"{name} must hold one or more seeds, each on the same questions")
    return np.stack(rows)


_CHUNK = 500  # bootstrap resamples drawn at once (a chunk x questions weight matrix)


def _seed_means(rng: np.random.Generator, per_seed: np.ndarray) -> np.ndarray:
    """Mean over a resample (with replacement) of the seeds, per bootstrap row."""
    pick = rng.integers(per_seed.shape[1], size=per_seed.shape)
    return np.take_along_axis(per_seed, pick, axis=1).mean(axis=1)


def _two_level(arrays: Sequence[np.ndarray], n_boot: int, seed: int) -> list[np.ndarray]:
    """Bootstrap means of each (seeds x n) array: questions resampled once per row and shared
    by the arrays (paired), seeds resampled per array."""
    n = arrays[0].shape[1]
    rng = np.random.default_rng(seed)
    out: list[list[np.ndarray]] = [[] for _ in arrays]
    for start in range(0, n_boot, _CHUNK):
        weights = rng.multinomial(n, np.full(n, 1 / n), size=min(_CHUNK, n_boot - start))
        for i, x in enumerate(arrays):
            out[i].append(_seed_means(rng, weights @ x.T.astype(float) / n))
    return [np.concatenate(parts) for parts in out]


def seeded_accuracy(
    correct: Sequence[Sequence[bool]],
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> SeededAccuracy:
    """Accuracy of one model over its seeds (rows) on the same questions (columns)."""
    _check_args(confidence, n_boot)
    x = _as_seeds(correct, "correct")
    per_seed = tuple(float(v) for v in x.mean(axis=1))
    if x.shape[0] == 1:
        mean, low, high = accuracy_ci(x[0], confidence, n_boot, seed)
        return SeededAccuracy(1, x.shape[1], mean, math.nan, low, high, per_seed)
    mean = float(np.mean(per_seed))
    sd = float(np.std(per_seed, ddof=1))
    if x.shape[1] == 0:
        return SeededAccuracy(x.shape[0], 0, math.nan, math.nan, math.nan, math.nan, per_seed)
    (boot,) = _two_level([x], n_boot, seed)
    return SeededAccuracy(
        x.shape[0], x.shape[1], mean, sd, *_percentiles(boot, confidence), per_seed
    )


def bootstrap_p(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of 0: twice the share of resampled differences on the far
    side of 0 (each side counting the observed one), at most 1. Below 0.05 exactly when the
    95% percentile interval excludes 0, up to resampling granularity."""
    n = differences.size
    below, above = int((differences <= 0).sum()), int((differences >= 0).sum())
    return min(1.0, 2 * (min(below, above) + 1) / (n + 1))


def sign_flip_test(differences: np.ndarray, n_perm: int, seed: int) -> float:
    """Two-sided randomisation test of mean(differences) = 0, flipping each question's sign
    (Monte Carlo, with the observed labelling counted: p >= 1 / (n_perm + 1))."""
    d = differences[differences != 0]
    if d.size == 0:
        return 1.0
    observed = abs(d.sum())
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, n_perm, _CHUNK):
        signs = rng.choice((-1.0, 1.0), size=(min(_CHUNK, n_perm - start), d.size))
        extreme += int((np.abs(signs @ d) >= observed - 1e-9).sum())
    return (extreme + 1) / (n_perm + 1)


def seeded_difference(
    a: Sequence[Sequence[bool]],
    b: Sequence[Sequence[bool]],
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> PairedResult:
    """Accuracy difference b - a, each model over its seeds (rows) on the same questions."""
    _check_args(confidence, n_boot)
    xa, xb = _as_seeds(a, "a"), _as_seeds(b, "b")
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(
            f"a and b must be aligned on the same questions: {xa.shape[1]} and {xb.shape[1]}"
        )
    if xa.shape[0] == xb.shape[0] == 1:
        return paired_difference(xa[0], xb[0], confidence, n_boot, seed)
    n = xa.shape[1]
    mean_a, mean_b = xa.mean(axis=0), xb.mean(axis=0)
    a_only, b_only = float((mean_a * (1 - mean_b)).sum()), float((mean_b * (1 - mean_a)).sum())
    if n == 0:
        return PairedResult(0, *[math.nan] * 5, 1.0, 0.0, 0.0, SEEDS_AND_QUESTIONS, 1.0)
    boot_a, boot_b = _two_level([xa, xb], n_boot, seed)
    boot = boot_b - boot_a
    low, high = _percentiles(boot, confidence)
    return PairedResult(
        n=n,
        acc_a=float(mean_a.mean()),
        acc_b=float(mean_b.mean()),
        diff=float(mean_b.mean() - mean_a.mean()),
        low=low,
        high=high,
        p_value=bootstrap_p(boot),
        n_a_only=a_only,
        n_b_only=b_only,
        test=SEEDS_AND_QUESTIONS,
        p_seeds_fixed=sign_flip_test(mean_b - mean_a, n_boot, seed),
    )


def mcnemar_power(n: int, difference: float, discordant: float, alpha: float = 0.05) -> float:
    """Power of the two-sided McNemar test on n paired questions to detect an accuracy
    difference when a share `discordant` of questions is answered differently (normal
    approximation, Connor 1987): Phi((d sqrt(n) - z sqrt(p)) / sqrt(p - d^2))."""
    if not 0 < difference <= discordant <= 1:
        raise ValueError("need 0 < difference <= discordant <= 1")
    z = NormalDist().inv_cdf(1 - alpha / 2)
    spread = math.sqrt(max(discordant - difference**2, 1e-12))
    return NormalDist().cdf((difference * math.sqrt(n) - z * math.sqrt(discordant)) / spread)


def mcnemar_sample_size(
    difference: float, discordant: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Questions the McNemar test needs for `power` (the inverse of mcnemar_power)."""
    if not 0 < difference <= discordant <= 1:
        raise ValueError("need 0 < difference <= discordant <= 1")
    z_alpha, z_beta = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    root = z_alpha * math.sqrt(discordant) + z_beta * math.sqrt(discordant - difference**2)
    return math.ceil((root / difference) ** 2)
