"""Reference log-probs computed once (scdpo.train.reference): the file holds every pair's summed
log-probs under the SFT model, as a plain forward computes them; a DPO training that reads them
loads no reference model and matches the live-reference training (same loss at step 0 and at each
step, same weights after a few steps, within float tolerance). Both trainings run through the CLI
with the workflow jobs' environment (scdpo.cpu.job_environment)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_llama import save_tiny_llama

from scdpo.cpu import job_environment
from scdpo.train import cli, reference

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "workflow_scripts" / "train.py"
SIDES = ("chosen", "rejected")
RECIPE = {
    "learning_rate": 5e-3,
    "epochs": 2,
    "batch_size": 4,
    "gradient_accumulation_steps": 2,
    "max_length": 96,
    "lr_scheduler": "cosine",
    "warmup_ratio": 0.1,
    "seed": 0,
    "logging_steps": 1,
    "beta": 0.1,
}


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A tiny Llama, 22 train and 3 eval pairs of varied lengths (batches get padding), and the
    reference log-probs computed by the CLI."""
    root = tmp_path_factory.mktemp("reference")
    rows = [
        {
            "id": f"q{i % 9}",  # pair ids repeat, as step-controlled pairs share a question's id
            "prompt": f"Q{i}: {i} plus {i + 3}? " * (1 + i % 3),
            "chosen": f"A: {2 * i + 3} because {i}+{i + 3}" + " so" * (i % 4),
            "rejected": f"A: {i} maybe",
        }
        for i in range(25)
    ]
    for name, part in [("train", rows[:22]), ("eval", rows[22:])]:
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    texts = (r["prompt"] + r["chosen"] + r["rejected"] for r in rows)
    save_tiny_llama(texts, root / "sft", 256)
    done = run("reference-logps", *pairs_args(root), "--out", str(root / "ref.jsonl"))
    assert done.returncode == 0, done.stdout[-4000:]
    return root


def pairs_args(ws: Path) -> list[str]:
    return ["--model", str(ws / "sft"), "--data", str(ws / "train.jsonl")] + [
        "--eval-data",
        str(ws / "eval.jsonl"),
    ]


def run(stage: str, *args: str, recipe: dict = RECIPE) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.update(job_environment(env))
    command = [sys.executable, str(CLI), stage, *args, "--recipe", json.dumps(recipe)]
    return subprocess.run(
        command + ["--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        timeout=600,
    )


def dpo(ws: Path, name: str, precompute: bool) -> Path:
    recipe = {**RECIPE, "reference": "precomputed" if precompute else "live"}
    extra = ["--reference-logps", str(ws / "ref.jsonl")] if precompute else []
    out = ws / name
    done = run(
        "dpo",
        *pairs_args(ws),
        "--out",
        str(out / "model"),
        "--checkpoint-dir",
        str(out / "checkpoints"),
        *extra,
        recipe=recipe,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    return out / "model"


def _common(a: list[int], b: list[int]) -> int:
    same = [x == y for x, y in zip(a, b, strict=False)]
    return same.index(False) if False in same else len(same)


def plain_logps(model, tokenizer, row: dict) -> dict[str, float]:
    """log p(completion + EOS | prompt) of both sides, each one unpadded sequence, without TRL.
    The completion starts where the tokenised prompt and prompt + completion part (tokens can
    merge across the boundary), the earlier of the two sides, as TRL splits them."""
    prompt = tokenizer(row["prompt"])["input_ids"]
    ids = {s: tokenizer(row["prompt"] + row[s] + tokenizer.eos_token)["input_ids"] for s in SIDES}
    start = min(_common(prompt, ids[s]) for s in SIDES)
    out = {}
    for side in SIDES:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids[side]])).logits[0]
        logps = torch.log_softmax(logits.float(), dim=-1)
        out[side] = sum(logps[t - 1, ids[side][t]].item() for t in range(start, len(ids[side])))
    return out


def test_the_file_holds_every_pairs_summed_reference_logps(ws):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    records = [json.loads(line) for line in (ws / "ref.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for name in ("train", "eval") for line in open(ws / f"{name}.jsonl")]
    assert [(r["split"], r["line"]) for r in records] == [("train", i) for i in range(1, 23)] + [
        ("eval", i) for i in range(1, 4)
    ]
    assert [r["digest"] for r in records] == [reference.pair_digest(row) for row in rows]
    assert [r["id"] for r in records] == [row["id"] for row in rows]
    model = AutoModelForCausalLM.from_pretrained(ws / "sft", attn_implementation="sdpa").eval()
    tokenizer = AutoTokenizer.from_pretrained(ws / "sft")
    for record, row in zip(records, rows, strict=True):
        expected = plain_logps(model, tokenizer, row)
        for side in SIDES:
            assert record[f"ref_{side}_logps"] == pytest.approx(expected[side], abs=1e-4), row


def test_precomputed_reference_trains_as_the_live_reference(ws):
    live = dpo(ws, "live", precompute=False)
    pre = dpo(ws, "precomputed", precompute=True)
    first, second = load_file(live / "model.safetensors"), load_file(pre / "model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(second[name], first[name], rtol=0, atol=2e-5, msg=name)
    logs = [json.loads((d / "training_log.json").read_text())["history"] for d in (live, pre)]
    steps = [[h for h in log if "loss" in h] for log in logs]
    assert len(steps[0]) == len(steps[1]) == 6  # 22 pairs, batches of 4, 2 per step: 3 a epoch
    assert steps[0][0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # step 0: policy = ref
    for a, b in zip(*steps, strict=True):
        for key in ("loss", "rewards/margins", "rewards/accuracies", "grad_norm"):
            assert b[key] == pytest.approx(a[key], abs=1e-4), (a["step"], key)
    evals = [json.loads((d / "training_log.json").read_text())["eval"] for d in (live, pre)]
    assert evals[1]["eval_loss"] == pytest.approx(evals[0]["eval_loss"], abs=1e-5)


def test_a_precomputed_training_loads_one_model(ws, tmp_path, monkeypatch):
    loads = []
    load = cli.load_model
    monkeypatch.setattr(cli, "load_model", lambda *a: loads.append(a) or load(*a))
    recipe = {**RECIPE, "reference": "precomputed"}
    args = cli.parse_args(
        ["dpo", *pairs_args(ws), "--out", str(tmp_path / "o"), "--recipe", json.dumps(recipe)]
        + ["--checkpoint-dir", str(tmp_path / "ck"), "--reference-logps", str(ws / "ref.jsonl")]
    )
    data = cli._data("dpo", args, recipe)
    assert {reference.COLUMNS[0], reference.COLUMNS[1]} <= set(data["train"][0])
    tokenizer = cli.load_tokenizer(str(ws / "sft"), recipe)
    config = cli.build_config("dpo", recipe, tmp_path / "ck", tokenizer, True)
    trainer = cli.build_trainer("dpo", config, recipe, str(ws / "sft"), data, tokenizer)
    assert len(loads) == 1 and trainer.ref_model is None and trainer.precompute_ref_logps


def test_a_pair_the_file_lacks_or_a_missing_file_fails_by_name(ws, tmp_path):
    table = reference.read_logps(ws / "ref.jsonl")
    other = {"id": "new", "prompt": "Q: 1? ", "chosen": "A: 2", "rejected": "A: 3"}
    with pytest.raises(SystemExit, match="'new' \\(line 2 of its pair file\\)"):
        reference.attach([json.loads(open(ws / "train.jsonl").readline()), other], table, "f")
    recipe = {**RECIPE, "reference": "precomputed"}
    args = cli.parse_args(
        ["dpo", *pairs_args(ws), "--out", "o", "--checkpoint-dir", "c"]
        + ["--recipe", json.dumps(recipe)]
    )
    with pytest.raises(SystemExit, match="needs --reference-logps"):
        cli._data("dpo", args, recipe)


def test_the_reference_job_needs_only_the_keys_that_change_its_values(ws, tmp_path):
    """A rule keys the job on reference.RECIPE_KEYS alone, so that learning rates, betas and
    seeds share one file: the values are the same as with the whole recipe."""
    alone = {k: RECIPE[k] for k in reference.RECIPE_KEYS if k in RECIPE}
    done = run("reference-logps", *pairs_args(ws), "--out", str(tmp_path / "r.jsonl"), recipe=alone)
    assert done.returncode == 0, done.stdout[-4000:]
    assert (tmp_path / "r.jsonl").read_text() == (ws / "ref.jsonl").read_text()
