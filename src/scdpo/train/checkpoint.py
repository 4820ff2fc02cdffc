"""Checkpoints that survive a killed, timed-out or preempted training job, and exact resume.

A job's checkpoints live under `<root>/<key>/checkpoint-<step>/`, outside the rule's output (which
Snakemake deletes when a job fails). `key` hashes everything that decides the result, so a changed
recipe, data file, start model, world size or library version never resumes an old run. A
checkpoint counts only once every rank has written its part and rank 0 has written the `COMPLETE`
marker; a directory without it (a kill half-way through a save) is ignored and deleted.

Saves happen only at optimizer-step boundaries (never mid-accumulation), every `every_steps`
steps, every `every_minutes` minutes, and when a stop signal arrives (SLURM's warning before the
time limit, preemption's SIGTERM, Ctrl-C's SIGINT): then training saves and stops, and the CLI
exits non-zero (EXIT_RESUMABLE) so that the job is retried, or re-run by hand, and resumes.
Ranks agree on each decision through one all-reduce per step, because clocks and signal arrival
differ between processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback

from scdpo.jsonl import atomic_write

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
_STEP = re.compile(r"^checkpoint-(\d+)$")
# SIGUSR1/SIGURG: the time-limit warning (the profile asks SLURM for URG, see docs/slurm.md);
# SIGTERM: preemption and the time limit itself (SLURM sends SIGKILL KillWait seconds later);
# SIGINT: Ctrl-C in the terminal (every process of the foreground job gets it, and a launcher
# passes it on to its ranks), so an interrupted run resumes instead of losing its last steps.
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGURG, signal.SIGTERM, signal.SIGINT)
# sysexits.h EX_TEMPFAIL: "try again later"; the job failed but the retry resumes.
EXIT_RESUMABLE = 75


@dataclass(frozen=True)
class CheckpointPolicy:
    """The recipe's `checkpoint:` block (defaults in config/schema.yaml)."""

    every_steps: int = 500
    every_minutes: float = 30.0
    keep: int = 2

    @classmethod
    def from_recipe(cls, recipe: dict) -> CheckpointPolicy:
        block = recipe.get("checkpoint", {})
        return cls(**{k: block[k] for k in ("every_steps", "every_minutes", "keep") if k in block})


def _file_digest(path: Path, hasher: hashlib._Hash) -> None:
    # Weights of a 7B model are GBs: size and mtime identify them (a re-made model gets a new
    # mtime, so a false match would need an identical size and timestamp); small files by content.
    stat = path.stat()
    if stat.st_size > 64 * 2**20:
        hasher.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        return
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            hasher.update(block)


def path_digest(path: str | Path) -> str:
    """Hash of a file, or of every file under a directory (relative names included)."""
    path = Path(path)
    hasher = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        hasher.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        _file_digest(file, hasher)
    return hasher.hexdigest()


def run_key(stage: str, recipe: dict, inputs: dict[str, str], world_size: int) -> dict:
    """What decides a run's result; how often it is checkpointed, how it is launched and where
    its curves go do not."""
    import transformers
    import trl

    return {
        "stage": stage,
        "recipe": {
            k: v for k, v in recipe.items() if k not in ("checkpoint", "launcher", "report_to")
        },
        "inputs": {name: path_digest(path) for name, path in sorted(inputs.items()) if path},
        "world_size": world_size,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
        },
    }


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class CheckpointStore:
    """The checkpoints of one run: `<root>/<digest>/checkpoint-<step>`."""

    def __init__(self, root: str | Path, key: dict) -> None:
        self.root = Path(root)
        self.key = key
        self.dir = self.root / key_digest(key)

    def prepare(self, is_main: bool) -> None:
        """Main process: drop runs of other keys and half-written checkpoints, record the key."""
        if not is_main:
            return
        if self.root.is_dir():
            for other in self.root.iterdir():
                if other != self.dir:
                    log.info("removing checkpoints of a different run: %s", other)
                    shutil.rmtree(other, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        for path in self._steps(complete=False):
            if not (path / COMPLETE).exists():
                log.info("ignoring incomplete checkpoint %s (cut by a kill)", path)
                shutil.rmtree(path, ignore_errors=True)
        with atomic_write(self.dir / "key.json") as handle:
            handle.write(json.dumps(self.key, indent=1, sort_keys=True))

    def _steps(self, complete: bool = True) -> list[Path]:
        if not self.dir.is_dir():
            return []
        found = [
            (int(m.group(1)), p)
            for p in self.dir.iterdir()
            if (m := _STEP.match(p.name)) and p.is_dir()
        ]
        return [p for _, p in sorted(found) if not complete or (p / COMPLETE).exists()]

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        steps = self._steps()
        return steps[-1] if steps else None

    def mark_complete(self, step: int, keep: int) -> Path:
        """Main process, after every rank finished writing: mark, then prune to the last `keep`."""
        path = self.dir / f"checkpoint-{step}"
        marker = path / COMPLETE
        with atomic_write(marker) as handle:  # a marker is whole or absent, even on a full disk
            handle.write(json.dumps({"step": step, "time": time.time()}))
        for old in self._steps()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def remove_all(self) -> None:
        """Once the rule's output is complete, the checkpoints are no longer needed."""
        shutil.rmtree(self.root, ignore_errors=True)


class _StopFlag:
    """Remembers a stop signal; the training loop acts on it at the next optimizer step."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is None:
            log.warning("got %s: saving a checkpoint and stopping", signal.Signals(signum).name)
        self.signum = signum


def _agree(flags: list[bool], device: torch.device) -> list[bool]:
    """Any rank's flag counts for every rank (one small all-reduce)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flags
    if torch.distributed.get_backend() == "gloo":
        device = torch.device("cpu")
    tensor = torch.tensor([int(f) for f in flags], device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return [bool(v) for v in tensor.tolist()]


class ResumableCallback(TrainerCallback):
    """Decides when to save, marks saved checkpoints complete, stops on a signal, times saves."""

    def __init__(self, store: CheckpointStore, policy: CheckpointPolicy) -> None:
        self.store = store
        self.policy = policy
        self.stop = _StopFlag()
        self.stopped = False
        self.saves = 0
        self.save_seconds = 0.0
        self._save_started = 0.0
        self._last_save = time.monotonic()
        self._train_started = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self._train_started = self._last_save = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        due_steps = self.policy.every_steps > 0 and state.global_step % self.policy.every_steps == 0
        minutes = (time.monotonic() - self._last_save) / 60
        # Rank 0's clock decides, so that every rank saves at the same step.
        due_time = (
            state.is_world_process_zero
            and self.policy.every_minutes > 0
            and minutes >= self.policy.every_minutes
        )
        signalled, due_time = _agree([self.stop.signum is not None, due_time], args.device)
        finished = state.global_step >= state.max_steps
        if signalled and not finished:
            control.should_training_stop = True
            self.stopped = True
        if (signalled or due_steps or due_time) and not finished:
            control.should_save = True
            self._save_started = time.monotonic()
        return control

    def on_save(self, args, state, control, **kwargs):
        from accelerate import PartialState

        PartialState().wait_for_everyone()  # every rank's shard is on disk before the marker
        if state.is_world_process_zero:
            path = self.store.mark_complete(state.global_step, self.policy.keep)
            log.info("checkpoint %s complete", path)
        PartialState().wait_for_everyone()
        self._last_save = time.monotonic()
        self.saves += 1
        self.save_seconds += self._last_save - self._save_started
        return control

    def overhead(self) -> dict:
        """Checkpointing time as a share of this process's training time."""
        total = time.monotonic() - self._train_started
        return {
            "checkpoints_saved": self.saves,
            "checkpoint_seconds": round(self.save_seconds, 3),
            "train_seconds": round(total, 3),
            "checkpoint_share": round(self.save_seconds / total, 5) if total > 0 else 0.0,
        }
