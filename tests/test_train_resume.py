"""Kill-and-resume of the training CLI: a SIGKILL part-way through (second epoch, mid gradient
accumulation) or the SLURM time-limit signal, then a re-run, ends with the same weights as an
uninterrupted run. Bitwise: on CPU with one thread per process every kernel here is
deterministic, so any difference means the resumed run saw other samples or another order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_llama import save_tiny_llama

from scdpo.train.checkpoint import COMPLETE, EXIT_RESUMABLE

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "workflow_scripts" / "train.py"
ROWS = 30  # batch 4: 8 batches per epoch, the last one short; accumulation 3: steps of 3, 3, 2
RECIPE = {
    "learning_rate": 5e-3,
    "epochs": 2,
    "batch_size": 4,
    "gradient_accumulation_steps": 3,
    "max_length": 64,
    "lr_scheduler": "cosine",
    "warmup_ratio": 0.1,
    "seed": 0,
    "logging_steps": 1,
    "checkpoint": {"every_steps": 2, "every_minutes": 30, "keep": 2},
}
# Micro-batch 13 of 16: epoch 2 (batches 9-16), step 5 (batches 12-14), after its second batch.
# Checkpoints exist at steps 2 and 4, so the re-run resumes from step 4 and skips 3 batches.
KILL_AT_BATCH = 13

# Runs the CLI with a callback that sends a signal to its own process at one micro-batch.
HOOK = """
import os, sys
from transformers import TrainerCallback
import scdpo.train.cli as cli

SIGNAL, AT = int(os.environ["HOOK_SIGNAL"]), int(os.environ["HOOK_BATCH"])
# Under a launcher, only this rank gets the signal (the others must follow through the all-reduce).
MINE = os.environ.get("RANK", "0") == os.environ.get("HOOK_RANK", os.environ.get("RANK", "0"))


class Hook(TrainerCallback):
    batches = 0

    def _tick(self):
        self.batches += 1
        if self.batches == AT and MINE:
            os.kill(os.getpid(), SIGNAL)

    def on_substep_end(self, args, state, control, **kwargs):
        self._tick()

    def on_step_end(self, args, state, control, **kwargs):
        self._tick()


build = cli.build_trainer


def build_with_hook(*args, **kwargs):
    trainer = build(*args, **kwargs)
    trainer.add_callback(Hook())
    return trainer


cli.build_trainer = build_with_hook
cli.main(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A tiny Llama, SFT rows and DPO pairs."""
    root = tmp_path_factory.mktemp("train")
    sft = [
        {"prompt": f"Q{i}: {i} plus {i + 3}? ", "completion": f"A: {2 * i + 3} because {i}+{i + 3}"}
        for i in range(ROWS)
    ]
    pairs = [
        {"prompt": r["prompt"], "chosen": r["completion"], "rejected": f"A: {i} maybe"}
        for i, r in enumerate(sft)
    ]
    for name, rows in [("sft", sft), ("pairs", pairs), ("eval", pairs[:3])]:
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    save_tiny_llama((r["prompt"] + r["completion"] for r in sft), root / "base")
    (root / "hook.py").write_text(HOOK)
    return root


def train_command(ws: Path, stage: str, name: str, script: Path = CLI, **extra) -> list[str]:
    data = ["--data", str(ws / "sft.jsonl")]
    if stage == "dpo":
        data = ["--data", str(ws / "pairs.jsonl"), "--eval-data", str(ws / "eval.jsonl")]
    recipe = {**RECIPE, **({"beta": 0.1} if stage == "dpo" else {}), **extra}
    return [
        sys.executable,
        str(script),
        stage,
        "--model",
        str(ws / "base"),
        *data,
        "--out",
        str(ws / name / "model"),
        "--checkpoint-dir",
        str(ws / name / "checkpoints"),
        "--recipe",
        json.dumps(recipe),
        "--threads",
        "1",
    ]


def run(command: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=600
    )


def run_with_signal(ws: Path, stage: str, name: str, sig: int, batch: int, launcher: list = ()):
    env = {"HOOK_SIGNAL": str(int(sig)), "HOOK_BATCH": str(batch)}
    if launcher:
        env["HOOK_RANK"] = "1"  # one rank of several gets the signal
    return run([*train_command(ws, stage, name, script=ws / "hook.py"), *launcher], env)


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def checkpoint_steps(checkpoint_root: Path) -> list[int]:
    return sorted(
        int(p.name.split("-")[1])
        for p in checkpoint_root.glob("*/checkpoint-*")
        if (p / COMPLETE).exists()
    )


@pytest.fixture(scope="module")
def uninterrupted(workspace) -> dict[str, Path]:
    """One run of each stage without interruption: the reference weights."""
    done = {}
    for stage in ("sft", "dpo"):
        result = run(train_command(workspace, stage, f"{stage}_whole"))
        assert result.returncode == 0, result.stdout[-4000:]
        done[stage] = workspace / f"{stage}_whole"
    return done


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_sigkill_then_rerun_gives_the_uninterrupted_weights(workspace, uninterrupted, stage):
    name = f"{stage}_killed"
    killed = run_with_signal(workspace, stage, name, signal.SIGKILL, KILL_AT_BATCH)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-4000:]
    assert not (workspace / name / "model" / "model.safetensors").exists()
    assert checkpoint_steps(workspace / name / "checkpoints") == [2, 4]

    resumed = run(train_command(workspace, stage, name))
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    assert "(step 4)" in resumed.stdout and "resuming from" in resumed.stdout
    assert_same_weights(workspace / name / "model", uninterrupted[stage] / "model")
    log = json.loads((workspace / name / "model" / "training_log.json").read_text())
    assert log["resumed_from_step"] == 4
    # The output is complete: its checkpoints are gone.
    assert not (workspace / name / "checkpoints").exists()


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGINT], ids=["USR1", "INT"])
def test_stop_signal_saves_exits_nonzero_and_resumes(workspace, uninterrupted, sig):
    """SLURM's time-limit signal, and Ctrl-C's SIGINT alike."""
    name = f"sft_signalled_{sig.name}"
    # The signal mid-accumulation of step 3 (micro-batch 7; steps are 3 batches): training
    # finishes the step, saves checkpoint-3, stops, with no KeyboardInterrupt for SIGINT.
    stopped = run_with_signal(workspace, "sft", name, sig, 7)
    assert stopped.returncode == EXIT_RESUMABLE, stopped.stdout[-4000:]
    assert f"got {sig.name}" in stopped.stdout
    assert "KeyboardInterrupt" not in stopped.stdout
    assert checkpoint_steps(workspace / name / "checkpoints") == [2, 3]
    assert not (workspace / name / "model").exists()

    resumed = run(train_command(workspace, "sft", name))
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    assert "(step 3)" in resumed.stdout
    assert_same_weights(workspace / name / "model", uninterrupted["sft"] / "model")


# Two gloo processes on CPU (`--cpu` would start one plain process; `--multi_gpu` starts torchrun,
# which falls back to gloo without GPUs).
TWO = ["--launcher", "accelerate launch --multi_gpu --num_processes 2"]


def test_two_processes_one_signalled_rank_stops_both_and_resume_is_exact(workspace):
    whole = run([*train_command(workspace, "sft", "two_whole"), *TWO])
    assert whole.returncode == 0, whole.stdout[-4000:]
    assert "--main_process_port" in whole.stdout  # a free port, not accelerate's 29500
    assert whole.stdout.count("no checkpoint of this run") == 1  # rank 1 logs warnings only
    files = sorted(p.name for p in (workspace / "two_whole" / "model").iterdir())
    assert "training_log.json" in files and "tokenizer.json" in files
    log = json.loads((workspace / "two_whole" / "model" / "training_log.json").read_text())
    # accelerate names two processes without GPUs MULTI_CPU (torchrun, gloo).
    assert (log["world_size"], log["distributed_type"], log["zero_stage"]) == (2, "MULTI_CPU", None)

    # Per process: 15 rows, 4 batches per epoch (steps of 3 + 1 batches), 4 steps in all.
    # SIGUSR1 reaches rank 1 only, at batch 6 (epoch 2, mid step 3): both save step 3 and stop.
    name = "two_signalled"
    stopped = run_with_signal(workspace, "sft", name, signal.SIGUSR1, 6, launcher=TWO)
    assert stopped.returncode != 0, stopped.stdout[-4000:]
    assert stopped.stdout.count("got SIGUSR1") == 1
    assert checkpoint_steps(workspace / name / "checkpoints") == [2, 3]
    resumed = run([*train_command(workspace, "sft", name), *TWO])
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    assert "(step 3)" in resumed.stdout
    assert_same_weights(workspace / name / "model", workspace / "two_whole" / "model")
