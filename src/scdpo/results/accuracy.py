"""k. Paper Table 1: accuracy per model and benchmark with bootstrap intervals, paired tests of
each DPO variant against SFT and of SCDPO against both baselines, and the pair counts."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from scdpo.jsonl import read_jsonl
from scdpo.names import COMPARISONS, STEP_CONTROLLED, STEP_LEVEL, model_label, variant_of
from scdpo.results.data_scale import source_of
from scdpo.results.render import fmt_ci, fmt_p, html_page, markdown_page, pct, sorted_by_model
from scdpo.results.stats import (
    mcnemar_power,
    mcnemar_sample_size,
    seeded_accuracy,
    seeded_difference,
)

log = logging.getLogger(__name__)

# (experiment, model, benchmark) -> question id -> correct; a model is a variant or one of its
# seeds ("scdpo-seed2", scdpo.names.trained_name)
Outcomes = Mapping[tuple[str, str, str], Mapping[str, bool]]


def read_outcomes(path: str | Path) -> dict[str, bool]:
    """Question id -> correct, from a predictions JSONL."""
    outcomes: dict[str, bool] = {}
    for record in read_jsonl(path):
        if record["id"] in outcomes:
            raise ValueError(f"{path}: question id {record['id']!r} appears twice")
        outcomes[record["id"]] = bool(record["correct"])
    return outcomes


def by_variant(outcomes: Outcomes) -> dict[tuple[str, str, str], list[Mapping[str, bool]]]:
    """Each variant's seeds together (in the given order), on the same questions."""
    grouped: dict[tuple[str, str, str], list[Mapping[str, bool]]] = {}
    for (experiment, model, benchmark), by_id in outcomes.items():
        seeds = grouped.setdefault((experiment, variant_of(model), benchmark), [])
        if seeds and seeds[0].keys() != by_id.keys():
            raise ValueError(
                f"{experiment}/{benchmark}: the seeds of {variant_of(model)} were evaluated on "
                f"different questions ({len(seeds[0].keys() ^ by_id.keys())} ids differ)"
            )
        seeds.append(by_id)
    return grouped


def _matrix(seeds: Sequence[Mapping[str, bool]], ids: Sequence[str]) -> list[list[bool]]:
    return [[by_id[i] for i in ids] for by_id in seeds]


# The accuracy CSV: `correct` sums over seeds, `sd` is across seeds (NaN for one seed).
ACCURACY_COLUMNS = (
    "experiment",
    "benchmark",
    "model",
    "seeds",
    "n",
    "correct",
    "accuracy",
    "low",
    "high",
    "sd",
    "per_seed",
)


def accuracy_intervals(
    outcomes: Outcomes, confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> pd.DataFrame:
    """Accuracy (%) per experiment, benchmark and model (variant): the mean over its seeds, the
    spread across seeds (sd, per seed) and the interval over seeds and questions."""
    rows = []
    for (experiment, model, benchmark), seeds in by_variant(outcomes).items():
        ids = sorted(seeds[0])
        result = seeded_accuracy(_matrix(seeds, ids), confidence, n_boot, seed)
        rows.append(
            {
                "experiment": experiment,
                "benchmark": benchmark,
                "model": model,
                "seeds": result.seeds,
                "n": result.n,
                "correct": int(sum(sum(by_id.values()) for by_id in seeds)),
                "accuracy": pct(result.mean),
                "low": pct(result.low),
                "high": pct(result.high),
                "sd": pct(result.sd),
                "per_seed": " / ".join(f"{100 * a:.1f}" for a in result.per_seed),
            }
        )
    table = pd.DataFrame(rows, columns=[*ACCURACY_COLUMNS])
    return sorted_by_model(table, "model", ["experiment", "benchmark", "model"])


def paired_comparisons(
    outcomes: Outcomes, confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> pd.DataFrame:
    """Each comparison of COMPARISONS on the same questions: difference (points), its interval,
    p-value and the discordant counts (scdpo.results.stats: exact McNemar with one seed a side,
    otherwise the bootstrap over seeds and questions, and the sign-flip test of these models).
    Predictions must cover the same ids."""
    rows = []
    outcomes = by_variant(outcomes)
    for experiment, benchmark in sorted({(e, b) for e, _, b in outcomes}):
        for model, baseline in COMPARISONS:
            a = outcomes.get((experiment, baseline, benchmark))
            b = outcomes.get((experiment, model, benchmark))
            if a is None or b is None:
                continue
            if a[0].keys() != b[0].keys():
                raise ValueError(
                    f"{experiment}/{benchmark}: {model} and {baseline} were evaluated on "
                    f"different questions ({len(a[0].keys() ^ b[0].keys())} ids differ)"
                )
            ids = sorted(a[0])
            result = seeded_difference(_matrix(a, ids), _matrix(b, ids), confidence, n_boot, seed)
            rows.append(
                {
                    "experiment": experiment,
                    "benchmark": benchmark,
                    "comparison": f"{model_label(model)} - {model_label(baseline)}",
                    "model": model,
                    "baseline": baseline,
                    "seeds": f"{len(b)} / {len(a)}",
                    "n": result.n,
                    "difference": 100 * result.diff,
                    "low": 100 * result.low,
                    "high": 100 * result.high,
                    "p_value": result.p_value,
                    "test": result.test,
                    "p_seeds_fixed": result.p_seeds_fixed,
                    "model_only_right": result.n_b_only,
                    "baseline_only_right": result.n_a_only,
                    "discordant": (result.n_a_only + result.n_b_only) / result.n,
                }
            )
    return pd.DataFrame(rows)


def pair_counts(pairs: Mapping[tuple[str, str], Iterable[dict]]) -> pd.DataFrame:
    """Pairs per experiment, variant and source tag: naive (incl. data-equal extras),
    step-controlled, step-level (Step-DPO), total."""
    rows: dict[tuple[str, str, str], dict] = {}
    for (experiment, variant), records in pairs.items():
        for pair in records:
            key = (experiment, variant, source_of(pair["id"]))
            row = rows.setdefault(
                key,
                dict(zip(("experiment", "variant", "source"), key, strict=True))
                | {kind: 0 for kind in PAIR_KINDS},
            )
            kind = pair["kind"]
            row[kind if kind in (STEP_CONTROLLED, STEP_LEVEL) else "naive"] += 1
    table = pd.DataFrame(
        list(rows.values()), columns=["experiment", "variant", "source", *PAIR_KINDS]
    )
    table["total"] = table[list(PAIR_KINDS)].sum(axis=1)
    return sorted_by_model(table, "variant", ["experiment", "variant", "source"])


# Pair counts' columns: naive pairs (with data-equal extras), then the two step-level kinds.
PAIR_KINDS = ("naive", STEP_CONTROLLED, STEP_LEVEL)
PAIR_KIND_LABELS = {
    "naive": "naive pairs",
    STEP_CONTROLLED: "step-controlled pairs",
    STEP_LEVEL: "step-level pairs",
}


def _shown_kinds(counts: pd.DataFrame) -> list[str]:
    """Naive and step-controlled always; step-level where a variant has them (Step-DPO)."""
    return [k for k in PAIR_KINDS if k != STEP_LEVEL or counts[k].sum() > 0]


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
            {"experiment": experiment, "model": model_label(variant)}
            | {
                f"{PAIR_KIND_LABELS[kind]}{suffix}": _per_source(group[kind], sources)
                for kind in _shown_kinds(counts)
            }
            | {"total": int(group["total"].sum())}
        )
    return pd.DataFrame(rows)


def accuracy_wide(acc: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, model), one column per benchmark: 'acc [low, high]', with
    several seeds 'mean ± sd [low, high]' and the seeds' own accuracies."""
    seeded = bool((acc["seeds"] > 1).any())
    rows: dict[tuple[str, str], dict] = {}
    for r in acc.itertuples():
        row = rows.setdefault(
            (r.experiment, r.model),
            {"experiment": r.experiment, "model": model_label(r.model)}
            | ({"seeds": r.seeds} if seeded else {}),
        )
        spread = f" ± {r.sd:.1f}" if r.seeds > 1 else ""
        row[f"{r.benchmark} (n={r.n})"] = fmt_ci(r.accuracy, r.low, r.high).replace(
            " [", f"{spread} [", 1
        )
        if seeded:
            row[f"{r.benchmark} per seed"] = r.per_seed
    return pd.DataFrame(list(rows.values()))


def _fmt_p_or_blank(p: float) -> str:
    return "" if math.isnan(p) else fmt_p(p)


def _count(value: float) -> str:
    """A discordant count: whole with one seed a side, a mean over seed pairings otherwise."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def differences_display(diffs: pd.DataFrame) -> pd.DataFrame:
    if diffs.empty:
        return pd.DataFrame(columns=["experiment", "benchmark", "comparison"])
    return pd.DataFrame(
        {
            "experiment": diffs["experiment"],
            "benchmark": diffs["benchmark"],
            "comparison": diffs["comparison"],
            "seeds": diffs["seeds"],
            "n": diffs["n"],
            "difference [95% CI] (points)": [
                fmt_ci(d, lo, hi, signed=True)
                for d, lo, hi in zip(diffs["difference"], diffs["low"], diffs["high"], strict=True)
            ],
            "p": diffs["p_value"].map(fmt_p),
            "test": diffs["test"],
            **(
                {"p, these models (sign-flip)": diffs["p_seeds_fixed"].map(_fmt_p_or_blank)}
                if diffs["p_seeds_fixed"].notna().any()
                else {}
            ),
            "only model right / only baseline right": [
                f"{_count(m)} / {_count(b)}"
                for m, b in zip(
                    diffs["model_only_right"], diffs["baseline_only_right"], strict=True
                )
            ],
            "discordant (%)": (100 * diffs["discordant"]).round(1),
        }
    )


def power_table(
    acc: pd.DataFrame, difference: float, discordant: float, alpha: float = 0.05
) -> pd.DataFrame:
    """Per benchmark: the power of the paired test at its question count to detect
    `difference` when a share `discordant` of questions is answered differently, and the
    questions 80% power needs. With several seeds averaged the discordance is lower and the
    power higher, so this is the conservative one-seed figure."""
    sizes = acc.groupby(["experiment", "benchmark"], sort=False)["n"].first()
    return pd.DataFrame(
        [
            {
                "experiment": experiment,
                "benchmark": benchmark,
                "n": n,
                "difference (points)": round(100 * difference, 1),
                "discordant (%)": round(100 * discordant, 1),
                "alpha": alpha,
                "power": round(mcnemar_power(n, difference, discordant, alpha), 3),
                "n for 80% power": mcnemar_sample_size(difference, discordant, alpha),
            }
            for (experiment, benchmark), n in sizes.items()
        ]
    )


def _ci_note(confidence: float, n_boot: int) -> str:
    return (
        f"Accuracy in %, {confidence:.0%} percentile-bootstrap interval ({n_boot} resamples; "
        "Wilson interval when all answers are right or all wrong). Differences are paired on "
        "the same questions: paired-bootstrap interval and exact two-sided McNemar test. A model "
        "trained with several seeds shows the mean over seeds ± their standard deviation; its "
        "intervals and p-values come from one bootstrap that resamples seeds and questions (a "
        "difference must hold across seeds); the sign-flip p keeps the trained models fixed "
        "and flips each question's difference of seed-averaged outcomes (is it these models' "
        "difference?). Discordant counts are means over seed pairings."
    )


def compact_table(acc: pd.DataFrame, counts: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 1's shape: a row per (experiment, model), accuracy (%) and n per benchmark
    (with several seeds: their mean, the seeds and their sd), then the variant's pairs
    (train + held-out): all, naive (with data-equal extras), step-controlled (and step-level)."""
    seeded = bool((acc["seeds"] > 1).any())
    rows: dict[tuple[str, str], dict] = {}
    for r in acc.itertuples():
        row = rows.setdefault(
            (r.experiment, r.model),
            {"experiment": r.experiment, "model": r.model} | ({"seeds": r.seeds} if seeded else {}),
        )
        row[r.benchmark] = round(r.accuracy, 1)
        if seeded:
            row[f"{r.benchmark} sd"] = round(r.sd, 1)
        row[f"{r.benchmark} n"] = r.n
    kinds = _shown_kinds(counts)
    totals = counts.groupby(["experiment", "variant"])[["total", *kinds]].sum()
    for (experiment, variant), c in totals.iterrows():
        row = rows.setdefault((experiment, variant), {"experiment": experiment, "model": variant})
        row["pairs"] = int(c["total"])
        for kind in kinds:
            row[PAIR_KIND_LABELS[kind]] = int(c[kind])
    table = sorted_by_model(pd.DataFrame(list(rows.values())), "model", ["experiment", "model"])
    table["model"] = table["model"].map(model_label)
    for column in table.columns:  # counts stay integers where a row has none (SFT: no pairs)
        if column.endswith(" n") or column.endswith("pairs") or column == "seeds":
            table[column] = table[column].astype("Int64")
    return table


def table_markdown(table: pd.DataFrame) -> str:
    """The compact table as Markdown, a blank cell where a row has no value."""
    blank = table.astype(object).where(table.notna(), "")
    return blank.to_markdown(index=False, floatfmt=".1f") + "\n"


def prediction_files(
    folders: Sequence[str], keys: Sequence[tuple[str, str, Sequence[str]]]
) -> dict[tuple[str, str, str], str]:
    """Evaluation folders (one per model, a file per benchmark) and what each holds, as
    {(experiment, model, benchmark): path}."""
    return {
        (exp, model, benchmark): str(Path(folder) / f"{benchmark}.jsonl")
        for folder, (exp, model, benchmarks) in zip(folders, keys, strict=True)
        for benchmark in benchmarks
    }


def pair_files(paths: Sequence[str], keys: Sequence[tuple[str, str]]) -> dict[tuple, list[str]]:
    """Pair files and the (experiment, variant) of each -> {(experiment, variant): [paths]}."""
    groups: dict[tuple[str, str], list[str]] = {}
    for path, (exp, variant) in zip(paths, keys, strict=True):
        groups.setdefault((exp, variant), []).append(path)
    return groups


def accuracy_report(
    prediction_paths: Mapping[tuple[str, str, str], str],
    pair_paths: Mapping[tuple[str, str], Sequence[str]],
    out: Mapping[str, str],
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
    power: Mapping[str, float] | None = None,
) -> None:
    """Table 1, compact (out: table_csv, table_md) and with confidence (out: csv of accuracies,
    differences and pairs as CSV, md, html); with `power` ({difference, discordant, alpha}),
    the power computation as its last section."""
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
    if power:
        sections.append(
            ("Power of the paired test (McNemar, normal approximation)", power_table(acc, **power))
        )
    note = _ci_note(confidence, n_boot)
    Path(out["md"]).write_text(markdown_page("Table 1 with confidence", sections, note))
    Path(out["html"]).write_text(html_page("Table 1 with confidence", sections, note))
    log.info("accuracy table: %d cells, %d comparisons", len(acc), len(diffs))
