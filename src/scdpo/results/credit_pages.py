"""Paper Fig. 2/3: token implicit rewards of the DPO-trained models on step-controlled pairs, as
coloured pages, and the localisation metric of the first erroneous block."""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from scdpo.jsonl import read_jsonl, write_jsonl
from scdpo.names import STEP_CONTROLLED, model_label
from scdpo.results.render import html_page, markdown_page
from scdpo.solution import END_OF_BLOCK

log = logging.getLogger(__name__)


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
    held_sc = [p for p in eval_pairs if p["kind"] == STEP_CONTROLLED][:max_pairs]
    held = [p | {"split": "held-out"} for p in held_sc]
    if len(held) >= min_held_out:
        return held
    room = max_pairs - len(held)
    train_sc = [p for p in train_pairs if p["kind"] == STEP_CONTROLLED]
    extra = train_sc[len(train_sc) - room :] if room > 0 else []
    return held + [p | {"split": "in-sample"} for p in extra]


def token_rewards_from(tokens: Sequence[str], lp_policy, lp_reference, beta: float):
    """TokenRewards of beta * (log pi - log pi_ref); offsets from the token pieces, which tile
    the completion (credit.token_logprobs guarantees it)."""
    from scdpo.results.credit import TokenRewards

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
    from scdpo.results.credit import localisation_metrics

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
                    "model": model_label(model),
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
    from scdpo.results.credit import block_rewards, render_html

    rows = [
        (f"{model_label(model)}: {side}", by_side[side])
        for side in ("chosen", "rejected")
        for model, by_side in rewards.items()
    ]
    spans = completion_block_spans(pair["rejected"])
    per_block = {
        model_label(model): block_rewards(by_side["rejected"], spans)
        for model, by_side in rewards.items()
    }
    context = _prompt_html(pair) + _block_table_html(pair, per_block)
    return render_html(rows, title, context)


def _load_logprobs(model_dir: str, items: Sequence[tuple[str, str]], device: str) -> list:
    import torch

    from scdpo.modeling import load
    from scdpo.results.credit import token_logprobs

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
    log.info(
        "credit: %d SC pairs scored, %d pages",
        len(pairs),
        min(len(pairs), settings["pages"]),
    )


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

    from scdpo.results.credit import TokenRewards, block_rewards

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
            model_label(m) for m in shown
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
