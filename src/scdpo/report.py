"""The report's tables and figures: Table 1 with confidence, the temperature pilot (paper Fig. 5),
credit assignment (Fig. 2/3) with a localisation metric, data statistics and cost.

Each section has pure functions (records in, DataFrame / text out; tested on constructed data)
and one `*_report` function that reads the workflow's files and writes a rule's outputs. Heavy
imports (torch, matplotlib) stay inside the functions that need them, so the tables import fast.
"""

from __future__ import annotations

import ast
import html
import logging
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from scdpo.jsonl import read_jsonl, write_jsonl
from scdpo.pipeline import MODEL_LABELS, MODELS
from scdpo.solution import END_OF_BLOCK, Block, render_blocks, render_solution
from scdpo.stats import accuracy_ci, paired_difference

log = logging.getLogger(__name__)

# (model, baseline): each DPO variant against SFT; SCDPO against both DPO baselines.
COMPARISONS = (
    ("dpo", "sft"),
    ("dpo_data_equal", "sft"),
    ("scdpo", "sft"),
    ("scdpo", "dpo"),
    ("scdpo", "dpo_data_equal"),
)
SC = "step_controlled"

# (experiment, model, benchmark) -> question id -> correct
Outcomes = Mapping[tuple[str, str, str], Mapping[str, bool]]


# --- formatting -----------------------------------------------------------------------------------


def fmt_ci(value: float, low: float, high: float, signed: bool = False) -> str:
    """'76.8 [74.5, 79.0]' (accuracy points); signed for differences."""
    if math.isnan(value):
        return "n/a"
    f = "{:+.1f}" if signed else "{:.1f}"
    return f"{f.format(value)} [{f.format(low)}, {f.format(high)}]"


def fmt_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#111;max-width:80em}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
p.note{color:#444;font-size:.9em;max-width:60em}
"""


def html_page(
    title: str, sections: Sequence[tuple[str, pd.DataFrame | str]], note: str = ""
) -> str:
    """A self-contained page of headed tables (DataFrames) or raw HTML fragments."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if note:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(body, pd.DataFrame):
            body = body.to_html(index=False, border=0, na_rep="")
        parts.append(body)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )


def markdown_page(title: str, sections: Sequence[tuple[str, pd.DataFrame]], note: str = "") -> str:
    parts = [f"# {title}\n"]
    if note:
        parts.append(f"{note}\n")
    for heading, table in sections:
        parts.append(f"## {heading}\n\n{table.to_markdown(index=False, disable_numparse=True)}\n")
    return "\n".join(parts)


def _pct(fraction: float) -> float:
    # Percent, rounded so that floating-point dust (a Wilson bound of 3e-15) reads as 0.
    return round(100 * fraction, 6)


def _model_order(model: str) -> int:
    return MODELS.index(model) if model in MODELS else len(MODELS)


def _sorted_by_model(table: pd.DataFrame, column: str, keys: list[str]) -> pd.DataFrame:
    """Rows sorted by `keys`, the model `column` in pipeline order (SFT, DPO, ..., SCDPO)."""
    order = table[column].map(_model_order)
    keys = ["_o" if key == column else key for key in keys]
    return table.assign(_o=order).sort_values(keys).drop(columns="_o").reset_index(drop=True)


# --- 1. Table 1 with confidence -------------------------------------------------------------------


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
                "accuracy": _pct(acc),
                "low": _pct(low),
                "high": _pct(high),
            }
        )
    table = pd.DataFrame(
        rows,
        columns=["experiment", "benchmark", "model", "n", "correct", "accuracy", "low", "high"],
    )
    return _sorted_by_model(table, "model", ["experiment", "benchmark", "model"])


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
                    "comparison": f"{MODEL_LABELS[model]} - {MODEL_LABELS[baseline]}",
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


def source_of(question_id: str) -> str:
    """The source tag of a question id ('gsm8k:12' -> 'gsm8k'); '' for untagged ids."""
    return question_id.split(":", 1)[0] if ":" in question_id else ""


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
            row[SC if pair["kind"] == SC else "naive"] += 1
    table = pd.DataFrame(
        list(rows.values()),
        columns=["experiment", "variant", "source", "naive", "step_controlled"],
    )
    table["total"] = table["naive"] + table["step_controlled"]
    return _sorted_by_model(table, "variant", ["experiment", "variant", "source"])


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
                "model": MODEL_LABELS.get(variant, variant),
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
            {"experiment": r.experiment, "model": MODEL_LABELS.get(r.model, r.model)},
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


def accuracy_report(
    prediction_paths: Mapping[tuple[str, str, str], str],
    pair_paths: Mapping[tuple[str, str], Sequence[str]],
    out: Mapping[str, str],
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> None:
    """Table 1 with confidence. out: csv (accuracy), differences, pairs (CSV), md, html."""
    outcomes = {key: read_outcomes(path) for key, path in prediction_paths.items()}
    acc = accuracy_intervals(outcomes, confidence, n_boot, seed)
    diffs = paired_comparisons(outcomes, confidence, n_boot, seed)
    pairs = {
        key: [p for path in paths for p in read_jsonl(path)] for key, paths in pair_paths.items()
    }
    counts = pair_counts(pairs)
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


# --- 2. temperature pilot (Fig. 5) ----------------------------------------------------------------


def subset_problems(records: Sequence[dict], limit: int, seed: int) -> list[dict]:
    """A seeded random subset of `limit` problems, in file order (benchmark files may be sorted
    by topic or difficulty, so the first `limit` would not be representative)."""
    if limit >= len(records):
        return list(records)
    keep = set(random.Random(seed).sample(range(len(records)), limit))
    return [r for i, r in enumerate(records) if i in keep]


def temperature_name(value: float) -> str:
    """The {temperature} wildcard for a grid value: 0.0 -> '0', 1.25 -> '1.25'."""
    return format(float(value), "g")


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
                "accuracy": _pct(acc),
                "low": _pct(low),
                "high": _pct(high),
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


# --- 3. credit assignment (Fig. 2/3) and localisation ---------------------------------------------


def completion_block_spans(completion: str) -> list[tuple[int, int]]:
    """[start, end) of each block of a rendered completion; the spans tile it. A block runs
    through its <|endofblock|>; the closing <|endofmessage|> (or any tail) joins the last block."""
    spans: list[tuple[int, int]] = []
    start = 0
    while (at := completion.find(END_OF_BLOCK, start)) != -1:
        spans.append((start, at + len(END_OF_BLOCK)))
        start = at + len(END_OF_BLOCK)
    if start < len(completion):
        if spans:
            spans[-1] = (spans[-1][0], len(completion))
        else:
            spans.append((0, len(completion)))
    return spans


def select_sc_pairs(
    eval_pairs: Sequence[dict], train_pairs: Sequence[dict], min_held_out: int, max_pairs: int
) -> list[dict]:
    """Held-out step-controlled pairs (split 'held-out'); when fewer than `min_held_out`, topped
    up to `max_pairs` with the last SC pairs of the training split (split 'in-sample')."""
    held = [p | {"split": "held-out"} for p in eval_pairs if p["kind"] == SC][:max_pairs]
    if len(held) >= min_held_out:
        return held
    room = max_pairs - len(held)
    train_sc = [p for p in train_pairs if p["kind"] == SC]
    extra = train_sc[len(train_sc) - room :] if room > 0 else []
    return held + [p | {"split": "in-sample"} for p in extra]


def token_rewards_from(tokens: Sequence[str], lp_policy, lp_reference, beta: float):
    """TokenRewards of beta * (log pi - log pi_ref); offsets from the token pieces, which tile
    the completion (credit.token_logprobs guarantees it)."""
    from scdpo.credit import TokenRewards

    ends = np.cumsum([len(t) for t in tokens]).tolist()
    starts = [0, *ends[:-1]]
    return TokenRewards(
        tokens=list(tokens),
        rewards=beta * (lp_policy - lp_reference),
        offsets=list(zip(starts, ends, strict=True)),
    )


def localisation_table(
    block_rewards: Mapping[str, Sequence[tuple[str, list[float]]]],
) -> pd.DataFrame:
    """Per model and pair split: how well low block reward singles out block 0 (the first block
    after the split, i.e. the first erroneous one) of the rejected completions.

    block_rewards: model -> [(split, per-block rewards of one rejected completion)].
    """
    from scdpo.credit import localisation_metrics

    rows = []
    for model, items in block_rewards.items():
        splits = sorted({s for s, _ in items})
        for split in splits + (["all"] if len(splits) > 1 else []):
            chosen = [r for s, r in items if split in ("all", s)]
            metrics = localisation_metrics([(r, 0) for r in chosen])
            first = [r[0] for r in chosen]
            rest = [v for r in chosen for v in r[1:]]
            rows.append(
                {
                    "model": MODEL_LABELS.get(model, model),
                    "pairs": split,
                    "n_pairs": metrics["n_items"],
                    "n_blocks": metrics["n_blocks"],
                    "auc": metrics["auc"],
                    "top1": metrics["top1"],
                    "top1_chance": metrics["top1_chance"],
                    "mean_reward_first_error_block": float(np.mean(first)) if first else math.nan,
                    "mean_reward_other_blocks": float(np.mean(rest)) if rest else math.nan,
                }
            )
    return pd.DataFrame(rows)


_LOCALISATION_NOTE = (
    "Rejected completions of step-controlled pairs: block 0 is the first block generated after "
    "the split point, the first erroneous block. Block reward = summed token implicit reward "
    "beta * (log pi - log pi_sft). AUC: block 0 against the other blocks, scored by minus the "
    "block reward (0.5 = chance). top1: share of pairs whose lowest-reward block is block 0 "
    "(top1_chance: the same for a random scorer). *_per_token: the same on each block's mean "
    "token reward, so that long blocks do not win by summing more tokens. "
    "'held-out' pairs are the SCDPO eval split; "
    "'in-sample' pairs come from its training split (SCDPO trained on them, DPO did not)."
)


def _prompt_html(pair: dict) -> str:
    facts = f"question {pair['id']}, split after block k={pair.get('k')}, pairs: {pair['split']}"
    return (
        f'<p style="font-size:.9em">{html.escape(facts)}</p>'
        "<details><summary>prompt (question and shared prefix t_0..t_k)</summary>"
        '<div class="text">' + html.escape(pair["prompt"]) + "</div></details>"
    )


def _block_table_html(pair: dict, rows: Mapping[str, Sequence[float]]) -> str:
    spans = completion_block_spans(pair["rejected"])
    head = "".join(f"<th>{html.escape(label)}</th>" for label in rows)
    body = ""
    for i, (s, e) in enumerate(spans):
        text = pair["rejected"][s:e]
        cells = "".join(f"<td>{values[i]:+.4g}</td>" for values in rows.values())
        mark = " (first erroneous)" if i == 0 else ""
        body += f"<tr><td>{i}{mark}</td><td>{html.escape(text[:60])}</td>{cells}</tr>"
    return (
        "<h2>Rejected completion: implicit reward per block</h2>"
        '<table border="1" style="border-collapse:collapse;font-size:.85em">'
        f"<tr><th>block</th><th>text</th>{head}</tr>{body}</table>"
    )


def credit_page(pair: dict, rewards: Mapping[str, Mapping[str, object]], title: str) -> str:
    """One pair: chosen and rejected completions coloured by each model's token reward, models
    side by side on one shared colour scale, plus the per-block rewards of the rejected one."""
    from scdpo.credit import block_rewards, render_html

    rows = [
        (f"{MODEL_LABELS.get(model, model)}: {side}", by_side[side])
        for side in ("chosen", "rejected")
        for model, by_side in rewards.items()
    ]
    spans = completion_block_spans(pair["rejected"])
    per_block = {
        MODEL_LABELS.get(model, model): block_rewards(by_side["rejected"], spans)
        for model, by_side in rewards.items()
    }
    extra = _prompt_html(pair) + _block_table_html(pair, per_block)
    # render_html has no slot for context; put it right under the title.
    return render_html(rows, title).replace("</h1>", "</h1>" + extra, 1)


def _load_logprobs(model_dir: str, items: Sequence[tuple[str, str]], device: str) -> list:
    import torch

    from scdpo.credit import token_logprobs
    from scdpo.modeling import load

    model, tokenizer = load(model_dir, device=device)
    out = [token_logprobs(model, tokenizer, prompt, completion) for prompt, completion in items]
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def credit_report(
    reference_dir: str,
    model_dirs: Mapping[str, str],
    eval_path: str,
    train_path: str,
    beta: float,
    settings: Mapping[str, int],
    out: Mapping[str, str],
    threads: int = 1,
) -> None:
    """Token rewards of each DPO-trained model against the SFT reference on selected SC pairs.

    settings: pages (pairs rendered), min_held_out, max_pairs. out: pages (directory), csv, md,
    html (localisation table), rewards (JSONL of block rewards per pair and model). Models are
    loaded one at a time (a 7B model pair would not fit twice on one GPU).
    """
    import torch

    from scdpo.modeling import set_threads

    set_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pairs = select_sc_pairs(
        list(read_jsonl(eval_path)),
        list(read_jsonl(train_path)),
        settings["min_held_out"],
        settings["max_pairs"],
    )
    if not pairs:
        raise ValueError(f"no step-controlled pairs in {eval_path} or {train_path}")
    rewards = _score_pairs(reference_dir, model_dirs, pairs, beta, device)
    per_block, per_token = _rejected_block_rewards(pairs, rewards)
    _write_localisation(localisation_with_per_token(pairs, per_block, per_token), out)
    write_jsonl(out["rewards"], _reward_records(pairs, rewards, per_block))
    _write_pages(pairs[: settings["pages"]], rewards, Path(out["pages"]))
    log.info("credit: %d SC pairs scored, %d pages", len(pairs), min(len(pairs), settings["pages"]))


def _score_pairs(
    reference_dir: str,
    model_dirs: Mapping[str, str],
    pairs: Sequence[dict],
    beta: float,
    device: str,
) -> dict[str, list[dict]]:
    """model -> per pair {"chosen": TokenRewards, "rejected": TokenRewards}."""
    items = [(p["prompt"], p[side]) for p in pairs for side in ("chosen", "rejected")]
    reference = _load_logprobs(reference_dir, items, device)
    rewards: dict[str, list[dict]] = {}
    for model, path in model_dirs.items():
        scored = _load_logprobs(path, items, device)
        trs = [
            token_rewards_from(tokens, lp, ref_lp, beta)
            for (tokens, lp), (_, ref_lp) in zip(scored, reference, strict=True)
        ]
        rewards[model] = [
            {"chosen": c, "rejected": r} for c, r in zip(trs[::2], trs[1::2], strict=True)
        ]
    return rewards


def _rejected_block_rewards(pairs: Sequence[dict], rewards: Mapping) -> tuple[dict, dict]:
    """Per model and pair: summed and per-token mean reward of each rejected block."""
    import torch

    from scdpo.credit import TokenRewards, block_rewards

    spans = [completion_block_spans(p["rejected"]) for p in pairs]
    summed, mean = {}, {}
    for model, rs in rewards.items():
        summed[model], mean[model] = [], []
        for r, s in zip(rs, spans, strict=True):
            tr = r["rejected"]
            ones = TokenRewards(tr.tokens, torch.ones(len(tr.tokens)), tr.offsets)
            counts = block_rewards(ones, s)
            sums = block_rewards(tr, s)
            summed[model].append(sums)
            mean[model].append([v / max(c, 1.0) for v, c in zip(sums, counts, strict=True)])
    return summed, mean


def localisation_with_per_token(
    pairs: Sequence[dict], per_block: Mapping[str, list], per_token: Mapping[str, list]
) -> pd.DataFrame:
    """The localisation table on summed block rewards, plus AUC / top1 on per-token means (a
    long block sums more token rewards, which the mean takes out)."""

    def items(by_model: Mapping[str, list]) -> dict:
        return {
            m: [(p["split"], b) for p, b in zip(pairs, bs, strict=True)]
            for m, bs in by_model.items()
        }

    table = localisation_table(items(per_block))
    normalised = localisation_table(items(per_token))
    table.insert(7, "auc_per_token", normalised["auc"])
    table.insert(8, "top1_per_token", normalised["top1"])
    return table


def _write_pages(pairs: Sequence[dict], rewards: Mapping, pages: Path) -> None:
    pages.mkdir(parents=True, exist_ok=True)
    shown = [m for m in ("dpo", "scdpo") if m in rewards] or list(rewards)
    for i, pair in enumerate(pairs):
        title = f"Implicit reward, pair {i + 1} ({pair['split']}): " + " vs ".join(
            MODEL_LABELS.get(m, m) for m in shown
        )
        page = credit_page(pair, {m: rewards[m][i] for m in shown}, title)
        (pages / f"pair{i + 1:02d}.html").write_text(page, encoding="utf-8")


def _write_localisation(table: pd.DataFrame, out: Mapping[str, str]) -> None:
    table.to_csv(out["csv"], index=False)
    shown = table.copy()
    for column in ("auc", "top1", "top1_chance", "auc_per_token", "top1_per_token"):
        shown[column] = shown[column].map(lambda v: "n/a" if math.isnan(v) else f"{v:.3f}")
    for column in ("mean_reward_first_error_block", "mean_reward_other_blocks"):
        shown[column] = shown[column].map(lambda v: "n/a" if math.isnan(v) else f"{v:+.4f}")
    sections = [("Localisation of the first erroneous block", shown)]
    title = "Credit assignment: localisation metric"
    Path(out["md"]).write_text(markdown_page(title, sections, _LOCALISATION_NOTE))
    Path(out["html"]).write_text(html_page(title, sections, _LOCALISATION_NOTE))


def _reward_records(pairs: Sequence[dict], rewards: Mapping, per_block: Mapping) -> list[dict]:
    records = []
    for i, pair in enumerate(pairs):
        records.append(
            {
                "id": pair["id"],
                "k": pair.get("k"),
                "split": pair["split"],
                "rejected_block_rewards": {m: per_block[m][i] for m in per_block},
                "chosen_reward": {m: float(rewards[m][i]["chosen"].rewards.sum()) for m in rewards},
            }
        )
    return records


# --- 4. data statistics ---------------------------------------------------------------------------


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
    samples_path: str, negatives_path: str, out: Mapping[str, str], title: str
) -> None:
    """out: md, html (tables), png (four panels), yields (CSV per split index)."""
    samples = list(read_jsonl(samples_path))
    negatives = list(read_jsonl(negatives_path))
    yields = yield_by_split(negatives)
    temps = wrong_temperatures(negatives)
    lengths = answer_lengths(samples, negatives)
    sections = [
        ("Naive sampling", _summary_frame(sampling_summary(samples))),
        ("Step-controlled generation", _summary_frame(step_control_summary(negatives))),
        ("Yield per split index k", yields.round(3)),
        ("Temperature at which the wrong continuation ended", temps.round(2)),
        ("Answer lengths", length_summary(lengths)),
    ]
    yields.to_csv(out["yields"], index=False)
    Path(out["md"]).write_text(markdown_page(title, sections))
    Path(out["html"]).write_text(html_page(title, sections))
    plot_data_stats(samples, yields, temps, lengths, out["png"], title)


# --- 5. cost --------------------------------------------------------------------------------------


def read_benchmark(path: str | Path) -> dict:
    """Wall and CPU seconds and peak RSS of one benchmark TSV (mean over repeats), plus the
    job's resources when Snakemake wrote them (--benchmark-extended)."""
    table = pd.read_csv(path, sep="\t")
    numeric = {
        c: pd.to_numeric(table[c], errors="coerce").mean()
        for c in ("s", "cpu_time", "max_rss")
        if c in table
    }
    resources = {}
    if "resources" in table and isinstance(table["resources"].iloc[0], str):
        try:
            resources = ast.literal_eval(table["resources"].iloc[0])
        except (ValueError, SyntaxError):
            resources = {}
    return {
        "s": float(numeric.get("s", math.nan)),
        "cpu_time": float(numeric.get("cpu_time", math.nan)),
        "max_rss": float(numeric.get("max_rss", math.nan)),
        "resources": resources if isinstance(resources, dict) else {},
    }


def cost_table(
    records: Sequence[dict], gpus_per_rule: Mapping[str, float], stage_order: Sequence[str] = ()
) -> pd.DataFrame:
    """records: {rule, experiment, s, cpu_time, max_rss, resources}. One row per (experiment,
    rule): jobs, wall hours (sum and longest job), CPU hours, peak RSS, GPUs per job and
    GPU-hours (rules with GPUs only); a final 'total' row."""
    rows: dict[tuple[str, str], dict] = {}
    for r in records:
        gpus = float(r.get("resources", {}).get("gpu", gpus_per_rule.get(r["rule"], 0)) or 0)
        row = rows.setdefault(
            (r["experiment"], r["rule"]),
            {
                "experiment": r["experiment"],
                "stage": r["rule"],
                "jobs": 0,
                "wall_h": 0.0,
                "longest_job_h": 0.0,
                "cpu_h": 0.0,
                "max_rss_gb": 0.0,
                "gpus": 0.0,
                "gpu_h": 0.0,
            },
        )
        hours = _nan0(r["s"]) / 3600
        row["jobs"] += 1
        row["wall_h"] += hours
        row["longest_job_h"] = max(row["longest_job_h"], hours)
        row["cpu_h"] += _nan0(r["cpu_time"]) / 3600
        row["max_rss_gb"] = max(row["max_rss_gb"], _nan0(r["max_rss"]) / 1024)
        row["gpus"] = max(row["gpus"], gpus)
        row["gpu_h"] += gpus * hours
    order = {name: i for i, name in enumerate(stage_order)}
    table = pd.DataFrame(
        sorted(
            rows.values(),
            key=lambda r: (r["experiment"], order.get(r["stage"], len(order)), r["stage"]),
        ),
        columns=[
            "experiment",
            "stage",
            "jobs",
            "wall_h",
            "longest_job_h",
            "cpu_h",
            "max_rss_gb",
            "gpus",
            "gpu_h",
        ],
    )
    total = {
        "experiment": "total",
        "stage": "",
        "jobs": int(table["jobs"].sum()),
        "wall_h": table["wall_h"].sum(),
        "longest_job_h": table["longest_job_h"].max(),
        "cpu_h": table["cpu_h"].sum(),
        "max_rss_gb": table["max_rss_gb"].max(),
        "gpus": math.nan,
        "gpu_h": table["gpu_h"].sum(),
    }
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    # No GPUs used: blank, not "0 GPU-hours" (which would read as measured).
    table.loc[table["gpus"] == 0, ["gpus", "gpu_h"]] = math.nan
    if not total["gpu_h"]:
        table.loc[table.index[-1], "gpu_h"] = math.nan
    return table


def _nan0(value: float) -> float:
    return 0.0 if value is None or math.isnan(value) else float(value)


def benchmark_records(bench_dir: str | Path, experiments: Sequence[str]) -> list[dict]:
    """Every logs/benchmarks/<rule>/... .tsv under bench_dir, read; the experiment is the first
    path component after the rule that names one (a folder, or the file itself: {exp}.tsv)."""
    records = []
    for path in sorted(Path(bench_dir).rglob("*.tsv")):
        rule, *rest = path.relative_to(bench_dir).with_suffix("").parts
        experiment = next((part for part in rest if part in experiments), "")
        records.append({"rule": rule, "experiment": experiment, **read_benchmark(path)})
    return records


def cost_report(
    bench_dir: str,
    experiments: Sequence[str],
    gpus_per_rule: Mapping[str, float],
    out: Mapping[str, str],
) -> None:
    """out: csv, md, html. Rules without benchmark: (cheap aggregation) are not counted."""
    table = cost_table(
        benchmark_records(bench_dir, experiments), gpus_per_rule, list(gpus_per_rule)
    )
    table.to_csv(out["csv"], index=False)
    shown = table.copy()
    for column in ("wall_h", "longest_job_h", "cpu_h", "gpu_h"):
        shown[column] = shown[column].map(lambda v: "" if math.isnan(v) else f"{v:.3f}")
    shown["max_rss_gb"] = shown["max_rss_gb"].map(lambda v: f"{v:.2f}")
    shown["gpus"] = shown["gpus"].map(lambda v: "" if math.isnan(v) else f"{v:g}")
    note = (
        "From the rules' benchmark files (logs/benchmarks/). Hours of wall time summed over a "
        "stage's jobs (jobs may have run in parallel); GPU-hours = GPUs per job (the rule's gpu "
        "resource, after the profile's set-resources) x wall hours, only where GPUs were used."
    )
    sections = [("Cost per stage", shown)]
    Path(out["md"]).write_text(markdown_page("Cost", sections, note))
    Path(out["html"]).write_text(html_page("Cost", sections, note))
