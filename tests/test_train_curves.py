"""Training curves (scdpo.train.events, scdpo.train.curves): TensorBoard event files written and
read without the tensorboard package, and a tiny DPO training's real event files read into a
table and a plot. The files' format was checked once by hand against tensorboard 2.21.0 (its
EventAccumulator reads ours; the file below is one its EventFileWriter wrote)."""

from __future__ import annotations

import base64
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_llama import save_tiny_llama

from scdpo.cpu import job_environment
from scdpo.train import events
from scdpo.train.curves import PLOTTED, curves_table, plot_curves, tags, write_curves_csv

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "workflow_scripts" / "train.py"
# tensorboard 2.21.0's EventFileWriter: scalar "a/b" = 0.0, 1.5, 3.0 at steps 0, 1, 2.
WRITTEN_BY_TENSORBOARD = (
    "SAAAAAAAAAD+kkidCV97o1wkxdpBGg1icmFpbi5FdmVudDoyUi4KLHRlbnNvcmJvYXJkLnN1bW1hcnkud3JpdGVyLmV2ZW50"
    "X2ZpbGVfd3JpdGVyGnmTXxcAAAAAAAAA5874HglDgaNcJMXaQSoMCgoKA2EvYhUAAAAAeE9Q7RkAAAAAAAAAi/EIKAm6gaNc"
    "JMXaQRABKgwKCgoDYS9iFQAAwD8fcB9CGQAAAAAAAACL8QgoCfSBo1wkxdpBEAIqDAoKCgNhL2IVAABAQE7MRbk="
)


def test_crc32c_and_masking_match_tfrecord():
    assert events.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert events.crc32c(b"") == 0


def test_a_file_tensorboard_wrote_is_read(tmp_path):
    (tmp_path / "events.out.tfevents.1796510066.vm.6455.0").write_bytes(
        base64.b64decode(WRITTEN_BY_TENSORBOARD)
    )
    scalars = events.read_scalars(tmp_path)
    assert [(s["tag"], s["step"], s["value"]) for s in scalars] == [
        ("a/b", 0, 0.0),
        ("a/b", 1, 1.5),
        ("a/b", 2, 3.0),
    ]


def test_written_scalars_read_back_a_torn_end_is_ignored_and_the_last_write_wins(tmp_path):
    writer = events.EventWriter(tmp_path)
    writer.scalars(1, {"train/loss": 0.5, "train/learning_rate": 1e-7}, wall_time=10.0)
    writer.scalars(2, {"train/loss": 0.25}, wall_time=11.0)
    writer.close()
    assert events.decode_event(next(events.read_records(writer.path)))["file_version"] == (
        events.FILE_VERSION
    )
    resumed = events.EventWriter(tmp_path)  # a resumed run logs step 2 again, later
    resumed.scalars(2, {"train/loss": 0.125}, wall_time=20.0)
    resumed.close()
    with writer.path.open("ab") as handle:  # a writer killed mid-record
        handle.write(events.record(events.encode_event(12.0, 3, {"train/loss": 9.0}))[:-7])
    got = [(s["tag"], s["step"], s["value"]) for s in events.read_scalars(tmp_path)]
    assert got == [
        ("train/learning_rate", 1, pytest.approx(1e-7)),
        ("train/loss", 1, 0.5),
        ("train/loss", 2, 0.125),
    ]
    data = bytearray(writer.path.read_bytes())
    data[30] ^= 0xFF
    writer.path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt record"):
        events.read_scalars(tmp_path)


def test_log_lines_become_tags():
    logs = {"loss": 0.7, "eval_rewards/margins": 0.1, "epoch": 1, "flag": True, "x": float("nan")}
    assert tags(logs) == {"train/loss": 0.7, "eval/rewards/margins": 0.1, "train/epoch": 1.0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny DPO training (4 optimizer steps, evaluated at the end of its epoch)."""
    root = tmp_path_factory.mktemp("curves")
    pairs = [
        {"prompt": f"Q{i}: {i} plus {i + 3}? ", "chosen": f"A: {2 * i + 3}", "rejected": f"A: {i}"}
        for i in range(19)
    ]
    for name, part in [("train", pairs[:16]), ("eval", pairs[16:])]:
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    save_tiny_llama((p["prompt"] + p["chosen"] for p in pairs), root / "sft", 64)
    recipe = {
        "learning_rate": 5e-3,
        "epochs": 1,
        "batch_size": 4,
        "gradient_accumulation_steps": 1,
        "max_length": 64,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.25,
        "seed": 0,
        "logging_steps": 1,
        "beta": 0.1,
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.update(job_environment(env))
    command = [sys.executable, str(CLI), "dpo", "--model", str(root / "sft")]
    command += ["--data", str(root / "train.jsonl"), "--eval-data", str(root / "eval.jsonl")]
    command += ["--out", str(root / "dpo"), "--checkpoint-dir", str(root / "ck")]
    command += ["--logging-dir", str(root / "logs"), "--recipe", json.dumps(recipe)]
    done = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stdout[-4000:]
    return root


def test_a_training_writes_its_curves_live_and_into_the_model(trained):
    live, kept = events.event_files(trained / "logs"), events.event_files(trained / "dpo")
    assert len(live) == 1 and [p.name for p in kept] == [live[0].name]
    assert len(live[0].parent.name) == 16  # a folder per run key: another recipe's run apart
    assert kept[0].parent == trained / "dpo" / "tensorboard"
    assert not (trained / "ck").exists()  # the checkpoints went, the curves stayed


def test_the_table_and_plot_of_real_event_files(trained, tmp_path):
    rows = curves_table({"dpo": trained / "dpo" / "tensorboard"})
    by_tag = {}
    for row in rows:
        by_tag.setdefault(row["tag"], []).append((row["step"], row["value"]))
    assert [step for step, _ in by_tag["train/loss"]] == [1, 2, 3, 4]
    assert by_tag["train/loss"][0][1] == pytest.approx(0.6931472)  # policy = reference at step 0
    lr = [value for _, value in by_tag["train/learning_rate"]]
    assert lr[0] < max(lr) and lr[-1] < max(lr)  # warm-up, then the cosine decay
    for tag in ("train/rewards/margins", "train/rewards/accuracies", "eval/loss"):
        assert tag in by_tag
    assert all(v > 0 for _, v in by_tag["throughput/tokens_per_second"])
    assert [s for s, _ in by_tag["throughput/tokens_per_second"]] == [2, 3, 4]  # between lines
    history = json.loads((trained / "dpo" / "training_log.json").read_text())["history"]
    margins = [h["rewards/margins"] for h in history if "rewards/margins" in h]
    assert [v for _, v in by_tag["train/rewards/margins"]] == pytest.approx(margins)

    assert write_curves_csv({"dpo": trained / "dpo" / "tensorboard"}, tmp_path / "c.csv") == len(
        rows
    )
    with (tmp_path / "c.csv").open() as handle:
        assert next(csv.DictReader(handle))["run"] == "dpo"
    runs = {"dpo": trained / "dpo" / "tensorboard", "again": trained / "logs"}
    drawn = plot_curves(runs, tmp_path / "curves.png")
    assert drawn == list(PLOTTED)
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
