"""Paper Fig. 5: the SFT model's accuracy against sampling temperature, with intervals."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from scdpo.jsonl import read_jsonl, write_jsonl
from scdpo.results.accuracy import read_outcomes
from scdpo.results.render import pct
from scdpo.results.stats import accuracy_ci


def subset_problems(records: Sequence[dict], limit: int, seed: int) -> list[dict]:
    """A seeded random subset of `limit` problems, in file order (benchmark files may be sorted
    by topic or difficulty, so the first `limit` would not be representative)."""
    if limit >= len(records):
        return list(records)
    keep = set(random.Random(seed).sample(range(len(records)), limit))
    return [r for i, r in enumerate(records) if i in keep]


def pilot_table(
    outcomes: Mapping[tuple[str, float], Sequence[bool]],
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """(benchmark, temperature) -> per-question correctness => accuracy (%) with interval."""
    rows = []
    for (benchmark, temperature), correct in outcomes.items():
        acc, low, high = accuracy_ci(list(correct), confidence, n_boot, seed)
        rows.append(
            {
                "benchmark": benchmark,
                "temperature": float(temperature),
                "n": len(correct),
                "accuracy": pct(acc),
                "low": pct(low),
                "high": pct(high),
            }
        )
    columns = ["benchmark", "temperature", "n", "accuracy", "low", "high"]
    return (
        pd.DataFrame(rows, columns=columns)
        .sort_values(["benchmark", "temperature"])
        .reset_index(drop=True)
    )


def plot_pilot(table: pd.DataFrame, out_png: str | Path, title: str) -> None:
    """Accuracy against sampling temperature, one line per benchmark with its interval band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for benchmark, group in table.groupby("benchmark"):
        n = int(group["n"].max())
        ax.plot(group["temperature"], group["accuracy"], marker="o", label=f"{benchmark} (n={n})")
        ax.fill_between(group["temperature"], group["low"], group["high"], alpha=0.2)
    ax.set_xlabel("sampling temperature")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def pilot_report(
    paths: Mapping[tuple[str, float], str],
    out_csv: str,
    out_png: str,
    title: str,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> None:
    outcomes = {key: list(read_outcomes(path).values()) for key, path in paths.items()}
    table = pilot_table(outcomes, confidence, n_boot, seed)
    table.to_csv(out_csv, index=False)
    plot_pilot(table, out_png, title)


def pilot_problems(in_path: str, out_path: str, limit: int, seed: int) -> None:
    write_jsonl(out_path, subset_problems(list(read_jsonl(in_path)), limit, seed))
