"""Statistics for the accuracy table: bootstrap intervals and paired tests.

Inputs are per-question 0/1 correctness arrays. For 0/1 data a bootstrap resample is fully
described by its counts, so the resampled statistics are drawn from their exact binomial /
multinomial distributions instead of materialising n_boot x n index matrices: the result is
the same percentile bootstrap, in O(n_boot) time and memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = ["PairedResult", "accuracy_ci", "mcnemar_exact", "paired_difference"]


@dataclass(frozen=True)
class PairedResult:
    """Comparison of model b against model a on the same questions (accuracy units, 0..1)."""

    n: int
    acc_a: float
    acc_b: float
    diff: float  # acc_b - acc_a
    low: float  # paired-bootstrap percentile interval of diff
    high: float
    p_value: float  # exact two-sided McNemar
    n_a_only: int  # discordant: a right, b wrong
    n_b_only: int  # discordant: a wrong, b right


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
