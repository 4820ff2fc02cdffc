"""Preference pairs: naive (D_naive), data-equal expansion, step-controlled (D_SC), and the mix.

Every pair is {"prompt", "chosen", "rejected"} (TRL's preference format) plus provenance: the
question id, the pair kind, and for step-controlled pairs the split index k and the temperatures of
the rejected suffix. For step-controlled pairs the prompt is question + t_0..t_k and ends on the
`<|endofblock|>` special token, so the DPO loss is summed over the two suffixes only.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from scdpo.jsonl import read_jsonl, write_jsonl
from scdpo.names import STEP_CONTROLLED, STEP_LEVEL
from scdpo.solution import Block, render_blocks, render_prompt, render_solution

log = logging.getLogger(__name__)


def _blocks(sample: dict) -> list[Block]:
    return [Block.from_json(b) for b in sample["blocks"]]


def _pair(question: dict, system: str, chosen: dict, rejected: dict, kind: str) -> dict:
    return {
        "id": question["id"],
        "kind": kind,
        "prompt": render_prompt(question["question"], system),
        "chosen": render_solution(_blocks(chosen)),
        "rejected": render_solution(_blocks(rejected)),
    }


def naive_pairs(sampled: list[dict], system: str) -> list[dict]:
    """One pair per question: its first preferred and first dispreferred sample."""
    pairs = []
    for question in sampled:
        preferred = [s for s in question["samples"] if s["preferred"]]
        dispreferred = [s for s in question["samples"] if s["dispreferred"]]
        if preferred and dispreferred:
            pairs.append(_pair(question, system, preferred[0], dispreferred[0], "naive"))
    return pairs


def data_equal_pairs(sampled: list[dict], system: str, target: int, seed: int) -> list[dict]:
    """Naive pairs expanded with more preferred x dispreferred combinations up to `target`.

    Extra combinations are taken round-robin across questions (in a seeded order), so the
    expansion spreads over questions instead of piling onto the few with many samples.
    """
    pairs = naive_pairs(sampled, system)
    extras = []
    for question in sampled:
        preferred = [s for s in question["samples"] if s["preferred"]]
        dispreferred = [s for s in question["samples"] if s["dispreferred"]]
        combos = list(itertools.product(range(len(preferred)), range(len(dispreferred))))[1:]
        random.Random(f"{seed}-{question['id']}").shuffle(combos)
        extras.append(
            [
                _pair(question, system, preferred[i], dispreferred[j], "naive_extra")
                for i, j in combos
            ]
        )
    for round_robin in itertools.zip_longest(*extras):
        for pair in round_robin:
            if len(pairs) >= target:
                return pairs
            if pair is not None:
                pairs.append(pair)
    return pairs


def step_controlled_pairs(generated: list[dict], system: str) -> list[dict]:
    """One pair per step-controlled negative: shared prefix t_0..t_k, two different suffixes."""
    pairs = []
    for question in generated:
        chosen = _blocks({"blocks": question["chosen"]})
        for negative in question["negatives"]:
            k = negative["k"]
            pairs.append(
                {
                    "id": question["id"],
                    "kind": STEP_CONTROLLED,
                    "k": k,
                    "temperatures": negative["temperatures"],
                    "prompt": render_prompt(question["question"], system)
                    + render_blocks(chosen[: k + 1]),
                    "chosen": render_solution(chosen[k + 1 :]),
                    "rejected": render_solution(_blocks(negative)),
                }
            )
    return pairs


def first_step(blocks: list[Block]) -> list[Block]:
    """The first step of a continuation: a text block, or a code block with its execution (the
    model writes the code; the sandbox's output belongs to the same step)."""
    if len(blocks) > 1 and blocks[0].kind == "code" and blocks[1].kind == "execution":
        return blocks[:2]
    return blocks[:1]


def _render_step(step: list[Block], rest: list[Block]) -> str:
    """A step as a completion; the last step of a solution also ends its message."""
    return render_solution(step) if len(step) == len(rest) else render_blocks(step)


def step_level_pairs(generated: list[dict], system: str) -> list[dict]:
    """Step-DPO's pairs from the step-controlled generations: the same prompt as the
    step-controlled pair (question + t_0..t_k), then one step each: the correct solution's next
    step (chosen) against the continuation's first new step (rejected).

    Step-DPO has GPT-4 locate the first wrong step; here the split point k is known by
    construction, and the first new step stands in for the wrong one. It may still be right (the
    continuation can go wrong later), which makes the pair noise, not signal (docs/variants.md).
    Pairs whose two steps are the same text teach nothing and are left out.
    """
    pairs, same_step = [], 0
    for question in generated:
        chosen = _blocks({"blocks": question["chosen"]})
        for negative in question["negatives"]:
            k = negative["k"]
            good_rest, bad_rest = chosen[k + 1 :], _blocks(negative)
            good = _render_step(first_step(good_rest), good_rest)
            bad = _render_step(first_step(bad_rest), bad_rest)
            if good == bad:
                same_step += 1
                continue
            pairs.append(
                {
                    "id": question["id"],
                    "kind": STEP_LEVEL,
                    "k": k,
                    "temperatures": negative["temperatures"][:1],  # one model call per step
                    "prompt": render_prompt(question["question"], system)
                    + render_blocks(chosen[: k + 1]),
                    "chosen": good,
                    "rejected": bad,
                }
            )
    log.info(
        "step-level pairs: %d; %d wrong continuations left out, their first step being the "
        "correct one",
        len(pairs),
        same_step,
    )
    return pairs


def mix(*pair_sets: list[dict], seed: int) -> list[dict]:
    """SCDPO's data: the sets shuffled together, one DPO loss on each pair."""
    mixed = [pair for pairs in pair_sets for pair in pairs]
    random.Random(seed).shuffle(mixed)
    return mixed


def split_eval(pairs: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out `fraction` of the pairs (at least one when there are two or more) for DPO eval."""
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    held = max(1, round(len(shuffled) * fraction)) if len(shuffled) > 1 else 0
    return shuffled[held:], shuffled[:held]


class Tokens(Protocol):
    """The tokenizer as pair building needs it: token ids without special tokens, and how many
    special tokens (BOS) the trainer puts before every prompt."""

    leading: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def fit_lengths(pairs: list[dict], tokens: Tokens, spec: dict) -> tuple[list[dict], dict]:
    """Apply the over-length policy of `spec` (max_length, max_prompt_length, over_length) and
    count what it removed or cut.

    `drop` (default): drop every pair TRL would truncate. TRL's DPOTrainer cuts prompt+completion
    to max_length keeping the start, which would cut into the suffix the loss is about (and drops
    pairs whose prompt alone fills it), without a word. `truncate`: what the original's TRL 0.7
    did: a prompt over max_prompt_length keeps its end, then both completions keep their start
    up to max_length; long MATH pairs survive, cut.
    """
    # The trainer's BOS counts against max_length too.
    max_length, max_prompt = spec["max_length"] - tokens.leading, spec["max_prompt_length"]
    kept: list[dict] = []
    report = {
        "over_length": spec["over_length"],
        "max_length": spec["max_length"],
        "pairs_in": len(pairs),
        "prompt_reaches_max_length": 0,
        "pair_exceeds_max_length": 0,
        "prompt_truncated": 0,
        "completions_truncated": 0,
    }
    for pair in pairs:
        ids = {key: tokens.encode(pair[key]) for key in ("prompt", "chosen", "rejected")}
        longest = len(ids["prompt"]) + max(len(ids["chosen"]), len(ids["rejected"]))
        if longest <= max_length:
            kept.append(pair)
        elif spec["over_length"] == "truncate":
            kept.append(_truncated(pair, ids, tokens, max_length, max_prompt, report))
        elif len(ids["prompt"]) >= max_length:
            report["prompt_reaches_max_length"] += 1
        else:
            report["pair_exceeds_max_length"] += 1
    report["pairs_kept"] = len(kept)
    return kept, report


def _truncated(
    pair: dict, ids: dict, tokens: Tokens, max_length: int, max_prompt: int, report: dict
) -> dict:
    prompt = ids["prompt"]
    if len(prompt) > max_prompt:
        prompt = prompt[-max_prompt:]
        report["prompt_truncated"] += 1
    room = max_length - len(prompt)
    cut = {key: ids[key][:room] for key in ("chosen", "rejected")}
    if any(len(cut[key]) < len(ids[key]) for key in cut):
        report["completions_truncated"] += 1
    return {
        **pair,
        "prompt": tokens.decode(prompt),
        "chosen": tokens.decode(cut["chosen"]),
        "rejected": tokens.decode(cut["rejected"]),
        "truncated": True,
    }


def counts_by_kind(pairs: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pair in pairs:
        counts[pair["kind"]] = counts.get(pair["kind"], 0) + 1
    return counts


# --- which pair set each DPO variant trains on ----------------------------------------------------


def _dpo_pairs(sampled: list[dict], negatives: list[dict], system: str, seed: int) -> list[dict]:
    return naive_pairs(sampled, system)


def _data_equal_pairs(
    sampled: list[dict], negatives: list[dict], system: str, seed: int
) -> list[dict]:
    """As many naive pairs as SCDPO has pairs (D_naive + D_SC)."""
    target = len(naive_pairs(sampled, system)) + len(step_controlled_pairs(negatives, system))
    return data_equal_pairs(sampled, system, target, seed)


def _scdpo_pairs(sampled: list[dict], negatives: list[dict], system: str, seed: int) -> list[dict]:
    return mix(naive_pairs(sampled, system), step_controlled_pairs(negatives, system), seed=seed)


def _step_dpo_pairs(
    sampled: list[dict], negatives: list[dict], system: str, seed: int
) -> list[dict]:
    return step_level_pairs(negatives, system)


# variant -> (pair builder, whether it reads the step-controlled negatives). The keys are
# scdpo.names.VARIANTS (tested); a new variant is a name there and a builder here.
PAIR_SETS: dict[str, tuple[Callable[..., list[dict]], bool]] = {
    "dpo": (_dpo_pairs, False),
    "dpo_data_equal": (_data_equal_pairs, True),
    "scdpo": (_scdpo_pairs, True),
    "step_dpo": (_step_dpo_pairs, True),
}


def build_pairs(
    variant: str,
    samples_path: str,
    negatives_path: str | None,
    model_dir: str,
    params: dict,
    out_dir: str,
) -> None:
    """One variant's DPO dataset with its held-out split and length report (pairs_build rule).

    Plain DPO reads only the naive samples, so changing step-controlled generation leaves it be.
    """
    builder, needs_negatives = PAIR_SETS[variant]
    negatives = list(read_jsonl(negatives_path)) if needs_negatives else []
    system, seed = params["system_prompt"], params["seed"]
    pairs = builder(list(read_jsonl(samples_path)), negatives, system, seed)
    kept, report = fit_lengths(pairs, _Tokenizer(model_dir), params["pairs"] | params["dpo"])
    train, held_out = split_eval(kept, params["pairs"]["eval_fraction"], seed)
    if not train:
        raise ValueError(f"{variant}: no training pairs left (report: {report})")
    write_jsonl(Path(out_dir) / "train.jsonl", train)
    write_jsonl(Path(out_dir) / "eval.jsonl", held_out)
    summary = {
        **report,
        "train": len(train),
        "eval": len(held_out),
        "by_kind": counts_by_kind(kept),
    }
    (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=1))
    log.info("%s: %s", variant, json.dumps(summary))
    dropped = report["pairs_in"] - report["pairs_kept"]
    if dropped or report["prompt_truncated"] or report["completions_truncated"]:
        log.warning(
            "%s: pairs over max_length %d (over_length: %s): %d dropped, %d prompts and %d "
            "completions truncated",
            variant,
            report["max_length"],
            report["over_length"],
            dropped,
            report["prompt_truncated"],
            report["completions_truncated"],
        )


class _Tokenizer:
    def __init__(self, model_dir: str) -> None:
        from scdpo.loading import load_tokenizer
        from scdpo.tokens import leading_special_ids

        # The one loader: trusts the folder's own code where the experiment's config did.
        self.tokenizer = load_tokenizer(model_dir)
        self.leading = len(leading_special_ids(self.tokenizer))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)
