"""The real workflow (this repository's Snakefile, a tiny config) runs sft_train, as on SLURM:

1. SLURM's time-limit warning: SIGURG to every process of the run (Snakemake, shell, trainer;
   slurmstepd signals all processes of a job step). Snakemake and the shell ignore it; training
   saves at the next optimizer step and exits 75; Snakemake fails the job, deletes its output.
2. The re-run resumes from that step; its trainer is SIGKILLed in the second epoch, mid gradient
   accumulation.
3. A plain re-run resumes from the newest complete checkpoint and ends with the weights of an
   uninterrupted run of the same CLI, bitwise (CPU, one thread: deterministic); the checkpoints
   are removed once the model is written.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from test_train_resume import assert_same_weights, run
from workflow_run import snakemake_command

from scdpo.cpu import job_environment

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "workflow_scripts" / "train.py"
SFT = {
    "learning_rate": 5.0e-3,
    "epochs": 2,
    "batch_size": 4,
    "gradient_accumulation_steps": 3,
    "max_length": 128,
    "lr_scheduler": "cosine",
    "warmup_ratio": 0.1,
    "seed": 0,
    "checkpoint": {"every_steps": 2, "every_minutes": 30, "keep": 2},
}
# 30 SFT rows as in test_train_resume: steps of 3, 3, 2 batches per epoch, 6 steps in all.
# Run 1: SIGURG after batch 4 (mid step 2) -> checkpoint-2. Run 2 resumes after batch 6; its 7th
# batch is batch 13 of the run: epoch 2, the second of step 5's three; checkpoint-4 is the newest.
URG_AT_BATCH, KILL_AT_BATCH = 4, 7

# Imported by every Python process of the run (PYTHONPATH); acts only in the training CLI, and
# only while SCDPO_TEST_SIGNAL is set: at micro-batch SCDPO_TEST_BATCH of this process, send that
# signal to this process, or to its whole process group when SCDPO_TEST_GROUP is set.
SITECUSTOMIZE = """
import os, sys

if os.environ.get("SCDPO_TEST_SIGNAL"):
    import importlib.abc, importlib.machinery

    class _Patch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "scdpo.train.cli":
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                _hook(module)

            spec.loader.exec_module = exec_module
            return spec

    def _hook(cli):
        from transformers import TrainerCallback

        sig, at = int(os.environ["SCDPO_TEST_SIGNAL"]), int(os.environ["SCDPO_TEST_BATCH"])
        group = bool(os.environ.get("SCDPO_TEST_GROUP"))

        class Signal(TrainerCallback):
            batches = 0

            def _tick(self):
                self.batches += 1
                if self.batches == at:
                    if group:
                        os.killpg(os.getpgid(0), sig)
                    else:
                        os.kill(os.getpid(), sig)

            on_substep_end = on_step_end = lambda self, *a, **k: self._tick()

        build = cli.build_trainer

        def build_with_signal(*args, **kwargs):
            trainer = build(*args, **kwargs)
            trainer.add_callback(Signal())
            return trainer

        cli.build_trainer = build_with_signal

    sys.meta_path.insert(0, _Patch())
"""


def tiny_config() -> dict:
    config = yaml.safe_load((REPO / "config" / "micro.yaml").read_text())
    spec = config["experiments"].pop("micro")
    spec["model"].update(
        hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, max_position_embeddings=128
    )
    spec["data"]["sft"]["n"] = 30
    spec["sft"] = copy.deepcopy(SFT)
    config["experiments"] = {"t": spec}
    return config


def snakemake(workdir: Path, env: dict) -> subprocess.CompletedProcess:
    target = "results/t/models/sft"
    command = snakemake_command(
        workdir, target, "--cores", "1", "--configfile", str(workdir / "tiny.yaml")
    )
    return subprocess.run(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        start_new_session=True,  # its own process group: the group signal stays inside the run
    )


def checkpoint_names(workdir: Path) -> list[str]:
    return sorted(p.name for p in (workdir / CHECKPOINTS).glob("*/checkpoint-*"))


CHECKPOINTS = "results/t/checkpoints/sft"


def test_time_limit_signal_and_sigkill_then_snakemake_reruns_resume_exactly(tmp_path):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_config()))
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    hook = {"PYTHONPATH": str(tmp_path / "hook")}
    log = tmp_path / "logs/sft_train/t.log"

    urg = {"SCDPO_TEST_SIGNAL": str(int(signal.SIGURG)), "SCDPO_TEST_GROUP": "1"}
    warned = snakemake(tmp_path, {**hook, **urg, "SCDPO_TEST_BATCH": str(URG_AT_BATCH)})
    assert warned.returncode == 1, warned.stdout[-4000:]  # Snakemake itself survived the signal
    assert "Error in rule sft_train" in warned.stdout
    text = log.read_text()
    assert "got SIGURG" in text and "stopped by a signal at step 2" in text, text[-3000:]
    assert not (tmp_path / "results/t/models/sft").exists()
    assert checkpoint_names(tmp_path) == ["checkpoint-2"]

    kill = {"SCDPO_TEST_SIGNAL": str(int(signal.SIGKILL)), "SCDPO_TEST_BATCH": str(KILL_AT_BATCH)}
    killed = snakemake(tmp_path, {**hook, **kill})
    assert killed.returncode == 1, killed.stdout[-4000:]
    assert "Error in rule sft_train" in killed.stdout
    assert "(step 2)" in log.read_text()
    assert not (tmp_path / "results/t/models/sft").exists()  # Snakemake removed the output
    assert checkpoint_names(tmp_path) == ["checkpoint-2", "checkpoint-4"]

    rerun = snakemake(tmp_path, {})
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    text = log.read_text()
    assert "resuming from" in text and "(step 4)" in text, text[-3000:]
    assert "checkpoints: " in text  # the overhead line
    assert not (tmp_path / CHECKPOINTS).exists()  # the output is complete: checkpoints removed

    # The same CLI with the same inputs and recipe, never interrupted.
    whole = tmp_path / "whole"
    command = [
        sys.executable,
        str(CLI),
        "sft",
        "--model",
        str(tmp_path / "results/t/models/base"),
        "--data",
        str(tmp_path / "results/t/sft/data.jsonl"),
        "--out",
        str(whole / "model"),
        "--checkpoint-dir",
        str(whole / "checkpoints"),
        "--recipe",
        json.dumps(SFT),
        "--threads",
        "1",
    ]
    result = run(command, job_environment(os.environ))  # the CPU kernel path of the jobs
    assert result.returncode == 0, result.stdout[-4000:]
    assert_same_weights(tmp_path / "results/t/models/sft", whole / "model")
