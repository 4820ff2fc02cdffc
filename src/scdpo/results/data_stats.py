"""Data statistics: samples per pair, yield per split index, temperatures of the wrong
continuations and answer lengths."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from scdpo.jsonl import read_jsonl
from scdpo.names import STEP_CONTROLLED, model_label
from scdpo.results.data_scale import data_scale_table, source_of
from scdpo.results.render import html_page, markdown_page
from scdpo.solution import Block, render_blocks, render_solution

log = logging.getLogger(__name__)


def sampling_summary(samples: Sequence[dict]) -> dict:
    """Naive sampling: samples drawn, questions with a pair and samples drawn per pair."""
    drawn = [len(q["samples"]) for q in samples]
    with_pair = [
        len(q["samples"])
        for q in samples
        if any(s["preferred"] for s in q["samples"])
        and any(s["dispreferred"] for s in q["samples"])
    ]
    return {
        "questions": len(samples),
        "samples drawn": int(sum(drawn)),
        "questions with a pair": len(with_pair),
        "samples drawn per pair obtained": sum(drawn) / len(with_pair) if with_pair else math.nan,
        "samples drawn per question with a pair (median)": (
            float(np.median(with_pair)) if with_pair else math.nan
        ),
        "noisy samples": sum(s["noisy"] for q in samples for s in q["samples"]),
    }


def step_control_summary(negatives: Sequence[dict]) -> dict:
    """Step-controlled generation: continuations tried per SC pair obtained."""
    tries = sum(int(n) for q in negatives for n in q["tries"].values())
    found = sum(len(q["negatives"]) for q in negatives)
    return {
        "questions continued": len(negatives),
        "split points available": sum(len(q["split_points"]) for q in negatives),
        "split points tried": sum(len(q["tries"]) for q in negatives),
        "continuations generated": tries,
        "step-controlled negatives": found,
        "continuations per SC pair obtained": tries / found if found else math.nan,
    }


_STEP_COUNTS = (
    "solutions continued",
    "split points",
    "without a split point",
    "continuations",
    "step-controlled negatives",
)


def steps_by_source(negatives: Sequence[dict], pairs: Mapping[str, Sequence[dict]]) -> pd.DataFrame:
    """Per source: the split points of the solutions continued and what they gave, so that a
    source starved of step-controlled pairs shows (e.g. solutions whose steps were never cut into
    blocks: one block, no split point). `pairs`: variant -> its train + eval pairs."""
    rows: dict[str, dict] = {}
    for question in negatives:
        row = rows.setdefault(source_of(question["id"]), dict.fromkeys(_STEP_COUNTS, 0))
        row["solutions continued"] += 1
        row["split points"] += len(question["split_points"])
        row["without a split point"] += not question["split_points"]
        row["continuations"] += sum(int(n) for n in question["tries"].values())
        row["step-controlled negatives"] += len(question["negatives"])
    for variant, records in pairs.items():
        sc = [p for p in records if p["kind"] == STEP_CONTROLLED]
        if sc:
            for source, row in rows.items():
                column = f"{model_label(variant)} step-controlled pairs"
                row[column] = sum(source_of(p["id"]) == source for p in sc)
    table = []
    for source, row in sorted(rows.items()):
        n = row["solutions continued"]
        per_solution = row["split points"] / n if n else math.nan
        sc_pairs = [v for k, v in row.items() if k.endswith("step-controlled pairs")]
        starved = []
        if n and row["without a split point"] * 2 > n:
            starved.append("most solutions have no split point")
        if n and (not row["step-controlled negatives"] or (sc_pairs and not any(sc_pairs))):
            starved.append("no step-controlled pairs")
        table.append(
            {
                "source": source or "(untagged)",
                **row,
                "split points per solution": round(per_solution, 2),
                "starved": "; ".join(starved),
            }
        )
    return pd.DataFrame(table)


def yield_by_split(negatives: Sequence[dict]) -> pd.DataFrame:
    """Per split index k: split points tried, continuations, negatives found and the yields."""
    rows: dict[int, dict] = {}
    for question in negatives:
        for k, n in question["tries"].items():
            row = rows.setdefault(
                int(k), {"k": int(k), "tried": 0, "continuations": 0, "negatives": 0}
            )
            row["tried"] += 1
            row["continuations"] += int(n)
        for negative in question["negatives"]:
            rows.setdefault(
                negative["k"], {"k": negative["k"], "tried": 0, "continuations": 0, "negatives": 0}
            )["negatives"] += 1
    table = pd.DataFrame(
        sorted(rows.values(), key=lambda r: r["k"]),
        columns=["k", "tried", "continuations", "negatives"],
    )
    table["negatives per split point"] = table["negatives"] / table["tried"]
    table["negatives per continuation"] = table["negatives"] / table["continuations"]
    return table


def wrong_temperatures(negatives: Sequence[dict]) -> pd.DataFrame:
    """Temperature of the last generated block of each negative (where the wrong final answer
    was written) and the number of model calls it took."""
    rows: dict[float, dict] = {}
    for question in negatives:
        for negative in question["negatives"]:
            temps = negative["temperatures"]
            t = round(float(temps[-1]), 4) if temps else math.nan
            row = rows.setdefault(t, {"temperature of last block": t, "negatives": 0, "calls": 0})
            row["negatives"] += 1
            row["calls"] += len(temps)
    table = pd.DataFrame(
        sorted(rows.values(), key=lambda r: r["temperature of last block"]),
        columns=["temperature of last block", "negatives", "calls"],
    )
    table["mean model calls"] = table["calls"] / table["negatives"]
    return table.drop(columns="calls")


def answer_lengths(samples: Sequence[dict], negatives: Sequence[dict]) -> pd.DataFrame:
    """One row per answer: group, characters of the rendered completion and blocks."""
    rows = []

    def add(group: str, blocks: list[dict], final: bool = True) -> None:
        bs = [Block.from_json(b) for b in blocks]
        text = render_solution(bs) if final else render_blocks(bs)
        rows.append({"group": group, "chars": len(text), "blocks": len(bs)})

    for question in samples:
        for s in question["samples"]:
            label = "preferred" if s["preferred"] else "dispreferred" if s["dispreferred"] else None
            if label:
                add(f"naive {label}", s["blocks"])
    for question in negatives:
        for negative in question["negatives"]:
            add("SC chosen suffix", question["chosen"][negative["k"] + 1 :])
            add("SC rejected suffix", negative["blocks"])
    return pd.DataFrame(rows, columns=["group", "chars", "blocks"])


def length_summary(lengths: pd.DataFrame) -> pd.DataFrame:
    if lengths.empty:
        return pd.DataFrame(columns=["group", "n"])
    grouped = lengths.groupby("group", sort=False)
    return pd.DataFrame(
        {
            "n": grouped.size(),
            "chars mean": grouped["chars"].mean().round(1),
            "chars median": grouped["chars"].median(),
            "chars p90": grouped["chars"].quantile(0.9).round(1),
            "blocks mean": grouped["blocks"].mean().round(2),
            "blocks median": grouped["blocks"].median(),
        }
    ).reset_index()


def _panel_sampling(ax, samples: Sequence[dict]) -> None:
    drawn = [len(q["samples"]) for q in samples]
    ax.hist(drawn, bins=np.arange(0.5, max(drawn, default=1) + 1.5), color="tab:blue")
    ax.set(xlabel="samples drawn per question", ylabel="questions", title="naive sampling")


def _panel_yield(ax, yields: pd.DataFrame) -> None:
    ax.bar(yields["k"], yields["negatives per split point"], color="tab:orange")
    ax.set_xticks(yields["k"])
    ax.set(
        xlabel="split index k",
        ylabel="negatives per split point tried",
        title="step-controlled yield by k",
    )


def _panel_temperatures(ax, temps: pd.DataFrame) -> None:
    positions = range(len(temps))
    ax.bar(positions, temps["negatives"], color="tab:red")
    ax.set_xticks(positions, [f"{t:g}" for t in temps["temperature of last block"]])
    ax.set(
        xlabel="temperature of the last generated block",
        ylabel="negatives",
        title="where the wrong continuation ended",
    )


def _panel_lengths(ax, lengths: pd.DataFrame) -> None:
    # Shared bins and densities: groups of very different sizes compare by shape.
    edges = np.histogram_bin_edges(lengths["chars"], bins=30) if not lengths.empty else 10
    for group, g in lengths.groupby("group", sort=False):
        ax.hist(g["chars"], bins=edges, histtype="step", density=True, label=group)
    ax.set(xlabel="characters (rendered completion)", ylabel="density", title="answer lengths")
    if not lengths.empty:
        ax.legend(fontsize=7)


def plot_data_stats(
    samples: Sequence[dict],
    yields: pd.DataFrame,
    temps: pd.DataFrame,
    lengths: pd.DataFrame,
    out_png: str | Path,
    title: str,
) -> None:
    """Four panels: samples per question, SC yield by k, wrong-continuation temperature, lengths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=110)
    _panel_sampling(axes[0, 0], samples)
    _panel_yield(axes[0, 1], yields)
    _panel_temperatures(axes[1, 0], temps)
    _panel_lengths(axes[1, 1], lengths)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def _summary_frame(summary: Mapping[str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "statistic": list(summary),
            "value": [v if isinstance(v, int) else round(float(v), 2) for v in summary.values()],
        }
    )


def data_stats_report(
    samples_path: str,
    negatives_path: str,
    pair_paths: Mapping[str, Sequence[str]],
    paper_model: str | None,
    out: Mapping[str, str],
    title: str,
) -> None:
    """out: md, html (tables), png (four panels), yields (CSV per split index), scale (CSV of
    the data per source beside the paper's counts). pair_paths: variant -> its pair files."""
    samples = list(read_jsonl(samples_path))
    negatives = list(read_jsonl(negatives_path))
    pairs = {v: [p for path in paths for p in read_jsonl(path)] for v, paths in pair_paths.items()}
    scale = data_scale_table(samples, pairs, paper_model)
    steps = steps_by_source(negatives, pairs)
    for row in steps.to_dict("records"):
        if row["starved"]:
            log.warning("source %s: %s (data_stats.md)", row["source"], row["starved"])
    yields = yield_by_split(negatives)
    temps = wrong_temperatures(negatives)
    lengths = answer_lengths(samples, negatives)
    sections = [
        ("Data per source, beside the paper's Table 1", scale),
        ("Naive sampling", _summary_frame(sampling_summary(samples))),
        ("Step-controlled generation", _summary_frame(step_control_summary(negatives))),
        ("Split points and step-controlled pairs per source", steps),
        ("Yield per split index k", yields.round(3)),
        ("Temperature at which the wrong continuation ended", temps.round(2)),
        ("Answer lengths", length_summary(lengths)),
    ]
    yields.to_csv(out["yields"], index=False)
    scale.to_csv(out["scale"], index=False)
    Path(out["md"]).write_text(markdown_page(title, sections))
    Path(out["html"]).write_text(html_page(title, sections))
    plot_data_stats(samples, yields, temps, lengths, out["png"], title)
