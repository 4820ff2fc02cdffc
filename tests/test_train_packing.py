"""Padding-free and packed SFT batches (scdpo.train.packing) keep exact per-example loss masking.

On CPU (sdpa, eager) the examples of a packed row are kept apart by the block-diagonal mask that
transformers builds from the restarting position_ids, which needs TRL's use_cache=False: each
example's logits in a packed row are its logits alone, its labels its completion's tokens; with the
cache on, the mask is plain causal and examples see each other (the check below catches that).
padding_free trains as the padded batches do (same loss at every step, same weights)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from tiny_llama import save_tiny_llama

from scdpo.cpu import job_environment
from scdpo.train import cli, packing

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "workflow_scripts" / "train.py"
RECIPE = {
    "learning_rate": 5e-3,
    "epochs": 2,
    "batch_size": 4,
    "gradient_accumulation_steps": 2,
    "max_length": 64,
    "lr_scheduler": "cosine",
    "warmup_ratio": 0.1,
    "seed": 0,
    "logging_steps": 1,
}


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A tiny Llama and 20 SFT rows of 10 to 60 tokens (one over max_length: cut)."""
    root = tmp_path_factory.mktemp("packing")
    rows = [
        {
            "prompt": f"Q{i}: {i} plus {i + 3}? " * (1 + i % 3),
            "completion": f"A: {2 * i + 3} because {i}+{i + 3}" + " so" * (i % 5),
        }
        for i in range(19)
    ]
    rows.append({"prompt": "Q: long? ", "completion": "A: " + "one two three " * 30})
    (root / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    save_tiny_llama((r["prompt"] + r["completion"] for r in rows), root / "base")
    return root


def trainer(ws: Path, tmp_path: Path, recipe: dict):
    tokenizer = cli.load_tokenizer(str(ws / "base"), recipe)
    config = cli.build_config("sft", recipe, tmp_path, tokenizer, False)
    data = {"train": cli._sft_rows(str(ws / "sft.jsonl")), "eval": []}
    return cli.build_trainer("sft", config, recipe, str(ws / "base"), data, tokenizer)


def segments(batch: dict) -> list[tuple[int, int]]:
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    return list(zip(starts, starts[1:] + [batch["position_ids"].size(1)], strict=True))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_examples_in_a_packed_row_see_only_themselves(ws, tmp_path, attention):
    recipe = {**RECIPE, "packing": "bfd", "attn_implementation": attention}
    packed = trainer(ws, tmp_path, recipe)
    padded = trainer(ws, tmp_path / "padded", {**RECIPE, "attn_implementation": attention})
    # The examples as the padded trainer sees them (cut to max_length, completion-only labels).
    examples = {tuple(r["input_ids"]): r["labels"] for r in padded.train_dataset}
    model = packed.model.eval()
    seen = 0
    for batch in packed.get_train_dataloader():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        assert "attention_mask" not in inputs and inputs["input_ids"].size(0) == 1  # one row
        with torch.no_grad():
            logits = model(**inputs, use_cache=False).logits[0]  # as TRL calls it in training
            leaky = model(**inputs, use_cache=True).logits[0]  # a cache: plain causal mask
        leaks = 0.0
        for start, end in segments(batch):
            ids = batch["input_ids"][0, start:end]
            with torch.no_grad():
                alone = model(input_ids=ids[None]).logits[0]
            torch.testing.assert_close(logits[start:end], alone, rtol=0, atol=2e-5)
            leaks = max(leaks, (leaky[start:end] - alone).abs().max().item())
            labels = batch["labels"][0, start:end].tolist()
            assert labels[1:] == examples[tuple(ids.tolist())][1:]  # the completion's tokens
            seen += 1
        if len(segments(batch)) > 1:
            assert leaks > 1e-3  # the check would see attention crossing examples
    assert seen == len(examples) == 20


def run(ws: Path, name: str, **extra) -> Path:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.update(job_environment(env))
    out = ws / name
    command = [sys.executable, str(CLI), "sft", "--model", str(ws / "base")]
    command += ["--data", str(ws / "sft.jsonl"), "--out", str(out / "model")]
    command += ["--checkpoint-dir", str(out / "ck"), "--recipe", json.dumps({**RECIPE, **extra})]
    done = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stdout[-4000:]
    return out / "model"


def history(model: Path) -> list[dict]:
    log = json.loads((model / "training_log.json").read_text())["history"]
    return [h for h in log if "loss" in h]


def test_padding_free_trains_as_padded_batches_do(ws):
    padded, free = run(ws, "padded"), run(ws, "padding_free", packing="padding_free")
    first, second = load_file(padded / "model.safetensors"), load_file(free / "model.safetensors")
    for name in first:
        torch.testing.assert_close(second[name], first[name], rtol=0, atol=2e-5, msg=name)
    steps = [history(padded), history(free)]
    assert len(steps[0]) == len(steps[1]) == 6  # 20 rows, batches of 4, 2 per step
    for a, b in zip(*steps, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
        assert b["num_tokens"] == a["num_tokens"]  # the same tokens, none of them padding


def test_bfd_packs_fewer_fuller_steps(ws):
    packed = history(run(ws, "bfd", packing="bfd"))
    assert len(packed) < 6


def test_packing_is_refused_where_attention_would_cross_examples():
    def model(module: str, attention: str):
        kind = type("M", (), {"__module__": module})
        instance = kind()
        instance.config = SimpleNamespace(_attn_implementation=attention)
        return instance

    builtin = "transformers.models.llama.modeling_llama"
    packing.check_model({"packing": "bfd"}, model(builtin, "sdpa"))
    packing.check_model({}, model("transformers_modules.internlm2", "eager"))  # none: anything
    with pytest.raises(SystemExit, match="set packing: none"):
        packing.check_model({"packing": "bfd"}, model("transformers_modules.internlm2", "eager"))
    with pytest.raises(SystemExit, match="set packing: none"):
        packing.check_model({"packing": "padding_free"}, model(builtin, "flex_attention"))
    with pytest.raises(SystemExit, match="not one of"):
        packing.mode({"packing": "wrapped"})


def test_stage_keys_are_refused_in_the_other_stage(tmp_path):
    tokenizer = SimpleNamespace(eos_token="</s>")
    with pytest.raises(SystemExit, match="packing is an SFT recipe key"):
        cli.build_config("dpo", {**RECIPE, "beta": 0.1, "packing": "bfd"}, tmp_path, tokenizer, 0)
    with pytest.raises(SystemExit, match="reference is a DPO recipe key"):
        cli.build_config("sft", {**RECIPE, "reference": "precomputed"}, tmp_path, tokenizer, 0)
