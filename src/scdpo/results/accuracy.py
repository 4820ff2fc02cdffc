"""k. Paper Table 1: accuracy per model and benchmark with bootstrap intervals, paired tests of
each DPO variant against SFT and of SCDPO against both baselines, and the pair counts."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from scdpo.jsonl import read_jsonl
from scdpo.names import COMPARISONS, STEP_CONTROLLED, model_label
from scdpo.results.data_scale import source_of
from scdpo.results.render import fmt_ci, fmt_p, html_page, markdown_page, pct, sorted_by_model
from scdpo.results.stats import accuracy_ci, paired_difference

log = logging.getLogger(__name__)

# (experiment, model, benchmark) -> question id -> correct
Outcomes = Mapping[tuple[str, str, str], Mapping[str, bool]]


def read_outcomes(path: str | Path) -> dict[str, bool]:
    """Question id -> correct, from a predictions JSONL."""
    outcomes: dict[str, bool] = {}
    for record in read_jsonl(path):
        if record["id"] in outcomes:
            raise ValueError(f"{path}: question id {record['id']!r} appears twice")
        outcomes[record["id"]] = bool(record["correct"])
    return outcomes


def accuracy_intervals(
    outcomes: Outcomes, confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> pd.DataFrame:
    """Accuracy (%) with its bootstrap interval per experiment, benchmark and model."""
    rows = []
    for (experiment, model, benchmark), by_id in outcomes.items():
        acc, low, high = accuracy_ci(list(by_id.values()), confidence, n_boot, seed)
        rows.append(
            {
                "experiment": experiment,
                "benchmark": benchmark,
                "model": model,
                "n": len(by_id),
                "correct": int(sum(by_id.values())),
                "accuracy": pct(acc),
                "low": pct(low),
                "high": pct(high),
            }
        )
    table = pd.DataFrame(
        rows,
        columns=["experiment", "benchmark", "model", "n", "correct", "accuracy", "low", "high"],
    )
    return sorted_by_model(table, "model", ["experiment", "benchmark", "model"])


def paired_comparisons(
    outcomes: Outcomes, confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> pd.DataFrame:
    """Each comparison of COMPARISONS on the same questions: difference (points), paired-bootstrap
    interval, exact McNemar p and the discordant counts. Predictions must cover the same ids."""
    rows = []
    for experiment, benchmark in sorted({(e, b) for e, _, b in outcomes}):
        for model, baseline in COMPARISONS:
            a = outcomes.get((experiment, baseline, benchmark))
            b = outcomes.get((experiment, model, benchmark))
            if a is None or b is None:
                continue
            if a.keys() != b.keys():
                raise ValueError(
                    f"{experiment}/{benchmark}: {model} and {baseline} were evaluated on "
                    f"different questions ({len(a.keys() ^ b.keys())} ids differ)"
                )
            ids = sorted(a)
            result = paired_difference(
                [a[i] for i in ids], [b[i] for i in ids], confidence, n_boot, seed
            )
            rows.append(
                {
                    "experiment": experiment,
                    "benchmark": benchmark,
                    "comparison": f"{model_label(model)} - {model_label(baseline)}",
                    "model": model,
                    "baseline": baseline,
                    "n": result.n,
                    "difference": 100 * result.diff,
                    "low": 100 * result.low,
                    "high": 100 * result.high,
                    "p_mcnemar": result.p_value,
                    "model_only_right": result.n_b_only,
                    "baseline_only_right": result.n_a_only,
                }
            )
    return pd.DataFrame(rows)


def pair_counts(pairs: Mapping[tuple[str, str], Iterable[dict]]) -> pd.DataFrame:
    """Pairs per experiment, variant and source tag: naive (incl. data-equal extras), SC, total."""
    rows: dict[tuple[str, str, str], dict] = {}
    for (experiment, variant), records in pairs.items():
        for pair in records:
            key = (experiment, variant, source_of(pair["id"]))
            row = rows.setdefault(
                key,
                dict(zip(("experiment", "variant", "source"), key, strict=True))
                | {"naive": 0, "step_controlled": 0},
            )
            row[STEP_CONTROLLED if pair["kind"] == STEP_CONTROLLED else "naive"] += 1
    table = pd.DataFrame(
        list(rows.values()),
        columns=["experiment", "variant", "source", "naive", "step_controlled"],
    )
    table["total"] = table["naive"] + table["step_controlled"]
    return sorted_by_model(table, "variant", ["experiment", "variant", "source"])


def _per_source(values: pd.Series, sources: Sequence[str]) -> str:
    by_source = dict(zip(values.index, values, strict=True))
    return " / ".join(str(int(by_source.get(s, 0))) for s in sources)


def pair_counts_wide(counts: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 1's layout: one row per variant, tagged sources side by side ('7012 / 5210')."""
    sources = sorted(counts["source"].unique())
    suffix = f" ({' / '.join(sources)})" if sources != [""] else ""
    rows = []
    for (experiment, variant), group in counts.groupby(["experiment", "variant"], sort=False):
        group = group.set_index("source")
        rows.append(
            {
                "experiment": experiment,
                "model": model_label(variant),
                f"naive pairs{suffix}": _per_source(group["naive"], sources),
                f"step-controlled pairs{suffix}": _per_source(group["step_controlled"], sources),
                "total": int(group["total"].sum()),
            }
        )
    return pd.DataFrame(rows)


def accuracy_wide(acc: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, model), one column per benchmark: 'acc [low, high]'."""
    rows: dict[tuple[str, str], dict] = {}
    for r in acc.itertuples():
        row = rows.setdefault(
            (r.experiment, r.model),
            {"experiment": r.experiment, "model": model_label(r.model)},
        )
        row[f"{r.benchmark} (n={r.n})"] = fmt_ci(r.accuracy, r.low, r.high)
    return pd.DataFrame(list(rows.values()))


def differences_display(diffs: pd.DataFrame) -> pd.DataFrame:
    if diffs.empty:
        return pd.DataFrame(columns=["experiment", "benchmark", "comparison"])
    return pd.DataFrame(
        {
            "experiment": diffs["experiment"],
            "benchmark": diffs["benchmark"],
            "comparison": diffs["comparison"],
            "n": diffs["n"],
            "difference [95% CI] (points)": [
                fmt_ci(d, lo, hi, signed=True)
                for d, lo, hi in zip(diffs["difference"], diffs["low"], diffs["high"], strict=True)
            ],
            "McNemar p": diffs["p_mcnemar"].map(fmt_p),
            "only model right / only baseline right": [
                f"{m} / {b}"
                for m, b in zip(
                    diffs["model_only_right"], diffs["baseline_only_right"], strict=True
                )
            ],
        }
    )


def _ci_note(confidence: float, n_boot: int) -> str:
    return (
        f"Accuracy in %, {confidence:.0%} percentile-bootstrap interval ({n_boot} resamples; "
        "Wilson interval when all answers are right or all wrong). Differences are paired on "
        "the same questions: paired-bootstrap interval and exact two-sided McNemar test."
    )


def compact_table(acc: pd.DataFrame, counts: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 1's shape: a row per (experiment, model), accuracy (%) and n per benchmark,
    then the variant's pairs (train + held-out): all, naive (with data-equal extras), SC."""
    rows: dict[tuple[str, str], dict] = {}
    for r in acc.itertuples():
        row = rows.setdefault(
            (r.experiment, r.model), {"experiment": r.experiment, "model": r.model}
        )
        row[r.benchmark] = round(r.accuracy, 1)
        row[f"{r.benchmark} n"] = r.n
    totals = counts.groupby(["experiment", "variant"])[["total", "naive", STEP_CONTROLLED]].sum()
    for (experiment, variant), c in totals.iterrows():
        row = rows.setdefault((experiment, variant), {"experiment": experiment, "model": variant})
        row["pairs"] = int(c["total"])
        row["naive pairs"] = int(c["naive"])
        row["step-controlled pairs"] = int(c[STEP_CONTROLLED])
    table = sorted_by_model(pd.DataFrame(list(rows.values())), "model", ["experiment", "model"])
    table["model"] = table["model"].map(model_label)
    for column in table.columns:  # counts stay integers where a row has none (SFT: no pairs)
        if column.endswith(" n") or column.endswith("pairs"):
            table[column] = table[column].astype("Int64")
    return table


def table_markdown(table: pd.DataFrame) -> str:
    """The compact table as Markdown, a blank cell where a row has no value."""
    blank = table.astype(object).where(table.notna(), "")
    return blank.to_markdown(index=False, floatfmt=".1f") + "\n"


def prediction_keys(paths: Iterable[str]) -> dict[tuple[str, str, str], str]:
    """results/{exp}/predictions/{model}/{benchmark}.jsonl -> {(exp, model, benchmark): path}."""
    return {(Path(p).parts[-4], Path(p).parts[-2], Path(p).stem): p for p in paths}


def pair_file_keys(paths: Iterable[str]) -> dict[tuple[str, str], list[str]]:
    """results/{exp}/pairs/{variant}/{split}.jsonl -> {(exp, variant): [paths]}."""
    groups: dict[tuple[str, str], list[str]] = {}
    for p in paths:
        groups.setdefault((Path(p).parts[-4], Path(p).parts[-2]), []).append(p)
    return groups


def accuracy_report(
    prediction_paths: Mapping[tuple[str, str, str], str],
    pair_paths: Mapping[tuple[str, str], Sequence[str]],
    out: Mapping[str, str],
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> None:
    """Table 1, compact (out: table_csv, table_md) and with confidence (out: csv of accuracies,
    differences and pairs as CSV, md, html)."""
    outcomes = {key: read_outcomes(path) for key, path in prediction_paths.items()}
    acc = accuracy_intervals(outcomes, confidence, n_boot, seed)
    diffs = paired_comparisons(outcomes, confidence, n_boot, seed)
    pairs = {
        key: [p for path in paths for p in read_jsonl(path)] for key, paths in pair_paths.items()
    }
    counts = pair_counts(pairs)
    table = compact_table(acc, counts)
    table.to_csv(out["table_csv"], index=False)
    Path(out["table_md"]).write_text(table_markdown(table))
    acc.to_csv(out["csv"], index=False)
    diffs.to_csv(out["differences"], index=False)
    counts.to_csv(out["pairs"], index=False)
    sections = [
        ("Accuracy with confidence interval", accuracy_wide(acc)),
        ("Paired differences on the same questions", differences_display(diffs)),
        ("Training pairs (train + held-out)", pair_counts_wide(counts)),
    ]
    note = _ci_note(confidence, n_boot)
    Path(out["md"]).write_text(markdown_page("Table 1 with confidence", sections, note))
    Path(out["html"]).write_text(html_page("Table 1 with confidence", sections, note))
    log.info("accuracy table: %d cells, %d comparisons", len(acc), len(diffs))
