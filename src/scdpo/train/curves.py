"""Training curves: TensorBoard event files written while training, a table and a plot of them.

CurvesCallback writes every value the trainer logs (loss, learning rate, grad norm; DPO's reward
margins and accuracies, chosen/rejected rewards and log-probs; the eval metrics) under `train/` or
`eval/`, and the throughput between two log lines under `throughput/` (optimizer steps, sequences
and tokens per second), at the optimizer step, on rank 0 (scdpo.train.events: no tensorboard
package needed). The CLI writes them while training under the run's checkpoint directory (or
--logging-dir) and copies them into the trained model's `tensorboard/` folder at the end, where the
report reads them: `curves_table` and `plot_curves` over one folder per training.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

from transformers import TrainerCallback

from scdpo.train.events import EventWriter, read_scalars

# What the report plots, in this order, when a training logged it.
PLOTTED = (
    "train/loss",
    "train/learning_rate",
    "train/rewards/margins",
    "train/rewards/accuracies",
    "eval/loss",
    "throughput/tokens_per_second",
)


def tags(logs: dict) -> dict[str, float]:
    """The numeric values of one trainer log line under TensorBoard tags."""
    out = {}
    for key, value in logs.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            continue
        out[f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}"] = float(value)
    return out


class CurvesCallback(TrainerCallback):
    """Writes the trainer's log lines and the throughput as TensorBoard scalars (rank 0)."""

    def __init__(self, logdir: str | Path) -> None:
        self.logdir = Path(logdir)
        self.writer: EventWriter | None = None
        self._mark: tuple[float, int, float | None] | None = None  # time, step, tokens seen

    def on_step_begin(self, args, state, control, **kwargs):
        if self._mark is None:  # after a resume too: the first step this process runs
            self._mark = (time.monotonic(), state.global_step, None)

    def _throughput(self, args, state, logs: dict) -> dict[str, float]:
        if self._mark is None or "loss" not in logs:
            return {}
        now, tokens = time.monotonic(), logs.get("num_tokens")
        started, step, seen = self._mark
        self._mark = (now, state.global_step, tokens)
        steps, seconds = state.global_step - step, now - started
        if steps <= 0 or seconds <= 0:
            return {}
        batch = args.per_device_train_batch_size * args.gradient_accumulation_steps
        out = {
            "throughput/steps_per_second": steps / seconds,
            "throughput/sequences_per_second": steps * batch * args.world_size / seconds,
        }
        if tokens is not None and seen is not None:
            out["throughput/tokens_per_second"] = (tokens - seen) / seconds
        return out

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        scalars = {**tags(logs), **self._throughput(args, state, logs)}
        if self.writer is None:
            self.writer = EventWriter(self.logdir)
        self.writer.scalars(state.global_step, scalars)

    # The writer stays open after training: the CLI's final evaluation logs to the same file (each
    # write is flushed, and the file is closed at exit).


def curves_table(runs: dict[str, str | Path]) -> list[dict]:
    """{run, tag, step, value} of every scalar of every run (name -> its event folder)."""
    return [
        {"run": name, "tag": s["tag"], "step": s["step"], "value": s["value"]}
        for name, logdir in runs.items()
        for s in read_scalars(logdir)
    ]


def write_curves_csv(runs: dict[str, str | Path], path: str | Path) -> int:
    rows = curves_table(runs)
    with Path(path).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["run", "tag", "step", "value"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def plot_curves(runs: dict[str, str | Path], path: str | Path, plotted=PLOTTED) -> list[str]:
    """One panel per tag of `plotted` that some run logged, one line per run; the tags drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = curves_table(runs)
    drawn = [tag for tag in plotted if any(r["tag"] == tag for r in rows)]
    columns = min(3, max(1, len(drawn)))
    lines = max(1, math.ceil(len(drawn) / columns))
    figure, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.2 * lines), squeeze=False)
    for axis, tag in zip(axes.flat, drawn, strict=False):
        for name in runs:
            points = [(r["step"], r["value"]) for r in rows if r["run"] == name and r["tag"] == tag]
            if points:
                axis.plot(*zip(*points, strict=True), marker="." if len(points) < 30 else None)
                axis.lines[-1].set_label(name)
        axis.set_title(tag, fontsize=9)
        axis.set_xlabel("optimizer step", fontsize=8)
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(drawn) :]:
        axis.set_visible(False)
    if drawn:
        axes.flat[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return drawn
