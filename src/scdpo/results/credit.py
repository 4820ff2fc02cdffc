"""Credit assignment (paper Fig. 2/3): token-level implicit reward, block localisation, HTML.

The implicit reward of completion token x_i after context s_i is
    r_i = beta * (log pi(x_i | s_i) - log pi_sft(x_i | s_i)),
with pi the DPO-trained policy and pi_sft its reference (SFT) model.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from scdpo.tokens import prompt_ids

__all__ = [
    "TokenRewards",
    "block_rewards",
    "implicit_reward",
    "localisation_metrics",
    "render_html",
    "token_logprobs",
]


@dataclass
class TokenRewards:
    """Per-token implicit rewards of one completion.

    offsets are contiguous (start, end) character spans that tile the completion, and
    tokens[i] == completion[start:end]; so "".join(tokens) == completion and whitespace that a
    tokenizer folds into a token (SentencePiece's "▁", byte-level "Ġ") is shown where it was.
    """

    tokens: list[str]
    rewards: torch.Tensor  # float32, shape (len(tokens),)
    offsets: list[tuple[int, int]]

    def __post_init__(self) -> None:
        if not len(self.tokens) == len(self.rewards) == len(self.offsets):
            raise ValueError(
                f"tokens ({len(self.tokens)}), rewards ({len(self.rewards)}) and "
                f"offsets ({len(self.offsets)}) differ in length"
            )


def _tile_offsets(raw: Sequence[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    # Token i's tile starts at min(its start, previous token's end): whitespace that byte-level
    # BPE trims from the offsets goes to the token it precedes, and tokens sharing a character
    # (SentencePiece's prepended "▁", byte-fallback pieces) give empty tiles then the character.
    starts, cut, prev_end = [], 0, 0
    for start, end in raw:
        cut = min(max(min(start, prev_end), cut), length)  # monotone, inside the completion
        starts.append(cut)
        prev_end = end
    if starts:
        starts[0] = 0
    return list(zip(starts, [*starts[1:], length], strict=True))


def _encode(tokenizer, prompt: str, completion: str) -> tuple[list[int], list[int], list]:
    ids = prompt_ids(tokenizer, prompt)  # with the BOS training saw
    enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    if not ids:
        raise ValueError(
            "the prompt must tokenize to at least one token (it conditions the "
            "first completion token)"
        )
    spans = _tile_offsets([tuple(o) for o in enc["offset_mapping"]], len(completion))
    return ids, list(enc["input_ids"]), spans


def _completion_logprobs(model, prompt_ids: list[int], completion_ids: list[int]) -> torch.Tensor:
    if not completion_ids:
        return torch.zeros(0, dtype=torch.float32)
    model.eval()
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids + completion_ids], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
    # Logits at position t predict token t + 1; keep only the rows that predict the completion.
    rows = logits[len(prompt_ids) - 1 : -1].float()
    logp = torch.log_softmax(rows, dim=-1)
    target = ids[0, len(prompt_ids) :].unsqueeze(-1)
    return logp.gather(-1, target).squeeze(-1).cpu()


def token_logprobs(
    model, tokenizer, prompt: str, completion: str
) -> tuple[list[str], torch.Tensor]:
    """Completion tokens (as text pieces of the completion) and their log-probabilities.

    Teacher forcing in one forward pass; prompt and completion are tokenized separately without
    special tokens and their ids concatenated, so the boundary is exact.
    """
    prompt_ids, completion_ids, spans = _encode(tokenizer, prompt, completion)
    tokens = [completion[s:e] for s, e in spans]
    return tokens, _completion_logprobs(model, prompt_ids, completion_ids)


def implicit_reward(
    policy, reference, tokenizer, prompt: str, completion: str, beta: float
) -> TokenRewards:
    """beta * (log pi(x_i | s_i) - log pi_sft(x_i | s_i)) for each completion token."""
    prompt_ids, completion_ids, spans = _encode(tokenizer, prompt, completion)
    lp_policy = _completion_logprobs(policy, prompt_ids, completion_ids)
    lp_reference = _completion_logprobs(reference, prompt_ids, completion_ids)
    return TokenRewards(
        tokens=[completion[s:e] for s, e in spans],
        rewards=beta * (lp_policy - lp_reference),
        offsets=spans,
    )


def block_rewards(token_rewards: TokenRewards, block_spans: list[tuple[int, int]]) -> list[float]:
    """Summed token reward per block; block spans are [start, end) char spans of the completion.

    A token belongs to a block when the last character of its tile does (an empty tile counts
    at the character after it, which its bytes help encode); so a token with a leading space
    after a step break counts in the step it starts, not in the break.
    """
    offsets = token_rewards.offsets
    last = max(offsets[-1][1] - 1, 0) if offsets else 0
    anchors = np.array([min(e - 1 if e > s else s, last) for s, e in offsets], dtype=np.int64)
    rewards = np.asarray(token_rewards.rewards, dtype=np.float64)
    out = []
    for start, end in block_spans:
        if not 0 <= start <= end:
            raise ValueError(f"invalid block span ({start}, {end})")
        out.append(float(rewards[(anchors >= start) & (anchors < end)].sum()))
    return out


def _average_ranks(x: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # 1-based rank of the last member of each tie group
    return (upper - (counts - 1) / 2)[inverse]


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    # Mann-Whitney U / (n_pos * n_neg), ties counted 0.5 via average ranks.
    if pos.size == 0 or neg.size == 0:
        return math.nan
    ranks = _average_ranks(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def localisation_metrics(items: Sequence[tuple[list[float], int]]) -> dict:
    """How well low block reward singles out the first erroneous block of rejected completions.

    items: (per-block rewards of a rejected completion, index of its first erroneous block).
    Returns auc (pooled over all blocks: first-erroneous vs other, scored by minus the block
    reward), top1 (share of items whose lowest-reward block is the first erroneous one; a tie
    for lowest gives 1/k credit), top1_chance (expected top1 of a random scorer),
    n_items and n_blocks.
    """
    pos, neg, top1, chance = [], [], 0.0, 0.0
    for rewards, first_err in items:
        r = np.asarray(rewards, dtype=np.float64)
        if not 0 <= first_err < r.size:
            raise ValueError(f"first erroneous block {first_err} out of range for {r.size} blocks")
        if not np.isfinite(r).all():
            raise ValueError("block rewards must be finite")
        pos.append(-r[first_err])
        neg.extend(-np.delete(r, first_err))
        lowest = np.flatnonzero(r == r.min())
        top1 += (first_err in lowest) / lowest.size
        chance += 1 / r.size
    n = len(pos)
    return {
        "auc": _auc(np.array(pos), np.array(neg)),
        "top1": top1 / n if n else math.nan,
        "top1_chance": chance / n if n else math.nan,
        "n_items": n,
        "n_blocks": n + len(neg),
    }


_NEG, _POS = (214, 39, 40), (44, 160, 44)  # red, green


def _colour(value: float, scale: float) -> str:
    t = min(abs(value) / scale, 1.0)
    end = _POS if value > 0 else _NEG
    r, g, b = (round(255 + t * (c - 255)) for c in end)
    return f"rgb({r},{g},{b})"


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#111}
.rows{display:flex;gap:1.5em;flex-wrap:wrap;align-items:flex-start}
.row{flex:1 1 0;min-width:22em}
.row h2{font-size:1.05em;margin:.2em 0}
.text{font-family:ui-monospace,monospace;font-size:.9em;white-space:pre-wrap;
word-break:break-word;border:1px solid #ccc;padding:.6em;line-height:1.5}
.text span{border-radius:2px}
.legend{display:flex;align-items:center;gap:.5em;margin:.8em 0;font-size:.9em}
.bar{width:16em;height:1em;border:1px solid #999;
background:linear-gradient(to right,rgb(214,39,40),#fff,rgb(44,160,44))}
"""


def render_html(rows: Sequence[tuple[str, TokenRewards]], title: str, context: str = "") -> str:
    """Self-contained HTML page: each labelled row's tokens on a red-white-green background,
    with an optional HTML fragment of `context` under the title.

    The colour scale is symmetric and shared by all rows, so models side by side compare.
    """
    values = [float(v) for _, tr in rows for v in np.asarray(tr.rewards, dtype=np.float64)]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("rewards must be finite")
    scale = max((abs(v) for v in values), default=0.0) or 1.0
    panels = []
    for label, tr in rows:
        spans = "".join(
            f'<span style="background:{_colour(float(v), scale)}" title="{float(v):+.4g}">'
            f"{html.escape(tok)}</span>"
            for tok, v in zip(tr.tokens, np.asarray(tr.rewards, dtype=np.float64), strict=True)
        )
        total = float(np.asarray(tr.rewards, dtype=np.float64).sum())
        panels.append(
            f'<div class="row"><h2>{html.escape(label)} '
            f'<small>(sum {total:+.4g})</small></h2><div class="text">{spans}</div></div>'
        )
    legend = (
        f'<div class="legend">implicit reward per token: <span>{-scale:+.3g}</span>'
        f'<span class="bar"></span><span>{scale:+.3g}</span>'
        f"<span>(hover a token for its value)</span></div>"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{context}{legend}"
        f'<div class="rows">{"".join(panels)}</div></body></html>\n'
    )
