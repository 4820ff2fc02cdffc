"""Shared pieces of the training perf scripts (dpo_reference.py, sft_packing.py).

The CPU stand-in is the embedded default's `tiny` experiment (config/config.yaml): its model spec
and its `sft` / `dpo` recipe, on synthetic code-format problems rendered as the workflow renders
them. Every measured training runs in a child process of its own (peak memory per mode, nothing
cached between modes) on the workflow jobs' pinned CPU kernel path (scdpo.cpu.job_environment)
with the rule's thread count, through the training CLI's own functions (build_config,
build_trainer), and is timed per optimizer step by a callback after a few warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def tiny_experiment() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return config["experiments"]["tiny"]


def rows(n: int, offset: int = 0) -> list[dict]:
    """n synthetic problems as SFT rows {prompt, completion}, as workflow_scripts/sft_data.py."""
    from scdpo.problems import synthetic_problems
    from scdpo.solution import Block, render_prompt, render_solution

    spec = tiny_experiment()
    out = []
    for problem in synthetic_problems(n, seed=7, max_ops=3, offset=offset):
        blocks = [Block.from_json(b) for b in problem["blocks"]]
        prompt = render_prompt(problem["question"], spec["system_prompt"])
        out.append({"prompt": prompt, "completion": render_solution(blocks)})
    return out


def build_model(workspace: Path, corpus: list[dict], overrides: dict) -> Path:
    from scdpo.modeling import build_base_model

    spec = {**tiny_experiment()["model"], **overrides}
    build_base_model(spec, (r["prompt"] + r["completion"] for r in corpus), workspace / "model")
    return workspace / "model"


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def child(script: str, args: list[str], threads: int) -> dict:
    """Run `script --child ...` with the jobs' environment; its last stdout line is JSON."""
    from scdpo.cpu import job_environment

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    env.update(job_environment(env))
    done = subprocess.run(
        [sys.executable, script, "--child", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed_training(trainer, warmup: int) -> dict:
    """Train, timing each optimizer step after `warmup` steps from one step's end to the next
    (batch loading and collation included), and counting the real (non-pad) tokens TRL counts
    in that window."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self):
            self.ends, self.tokens = [], 0

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= warmup:
                self.ends.append(time.perf_counter())
            if state.global_step == warmup:
                self.tokens = trainer._total_train_tokens

    clock = Clock()
    trainer.add_callback(clock)
    trainer.train()
    steps = [b - a for a, b in zip(clock.ends, clock.ends[1:], strict=False)]
    return {
        "step_seconds": statistics.median(steps),
        "measured_steps": len(steps),
        "train_seconds": clock.ends[-1] - clock.ends[0],
        "tokens": trainer._total_train_tokens - clock.tokens,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "model_mb": sum(p.numel() * p.element_size() for p in trainer.model.parameters()) / 2**20,
        "capability": capability(),
    }


def capability() -> str:
    return str(torch.backends.cpu.get_cpu_capability())


# --- what both training perf scripts' command lines share ----------------------------------------


def add_run_args(parser, threads: int, rule: str) -> None:
    """Steps, repeats, threads, the stand-in's size, and the child's hidden options."""
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=threads, help=f"torch threads ({rule})")
    parser.add_argument("--hidden-size", type=int, help="stand-in width (default: tiny's)")
    parser.add_argument("--num-layers", type=int, help="stand-in depth (default: tiny's)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workspace", help=argparse.SUPPRESS)


def model_overrides(args) -> dict:
    overrides = {"hidden_size": args.hidden_size, "num_layers": args.num_layers}
    return {k: v for k, v in overrides.items() if v}


def child_args(args, workspace: str) -> list[str]:
    """The options every child of a benchmark gets."""
    return ["--workspace", workspace, "--threads", str(args.threads)] + [
        "--steps", str(args.steps), "--warmup", str(args.warmup)
    ]  # fmt: skip


def stand_in_line(overrides: dict, data: str, recipe: dict, threads: int, pinned: str) -> str:
    spec = {**tiny_experiment()["model"], **overrides}
    return (
        f"stand-in: tiny Llama hidden {spec['hidden_size']} x {spec['num_layers']} layers, "
        f"{data}, batch {recipe['batch_size']}, max_length {recipe['max_length']}, "
        f"{threads} thread(s); cpu capability: machine {capability()}, jobs' pinned path {pinned}"
    )
