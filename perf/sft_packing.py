"""SFT tokens per second with padded, padding-free and packed batches (scdpo.train.packing, the
recipe's `packing: none | padding_free | bfd`), on the CPU stand-in.

    python perf/sft_packing.py [--examples 400] [--steps 8] [--warmup 2] [--repeats 2]
        [--threads 2] [--hidden-size 128] [--num-layers 4]

The stand-in is the embedded default's `tiny` model and `sft` recipe (config/config.yaml: batch 8,
max_length 256) on synthetic code-format SFT rows, as sft_train trains it (2 threads, the rule's).
Each mode trains in a fresh child process through the CLI's build_config / build_trainer;
tokens/s counts the real (non-pad) tokens TRL counts over `--steps` optimizer steps after
`--warmup`, from one step's end to the next (loading and collation included), best of
`--repeats` runs per mode (alternating). A packed (bfd) step holds `batch_size` rows of up to
max_length tokens, so it has more tokens than a padded step: compare tokens/s, not steps/s. The
last line is the headline, e.g. `sft packing: none 5200 tokens/s, padding_free 6100 tokens/s
(1.17x), bfd 7900 tokens/s (1.52x)`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _training_bench as bench  # noqa: E402

MODES = ("none", "padding_free", "bfd")


def run_child(args: argparse.Namespace) -> None:
    import torch

    from scdpo.train import cli

    torch.set_num_threads(args.threads)
    workspace = Path(args.workspace)
    sft = dict(bench.tiny_experiment()["sft"])
    sft.update(max_steps=args.warmup + args.steps, logging_steps=1000, epochs=100)
    sft["packing"] = args.child
    model = str(workspace / "model")
    tokenizer = cli.load_tokenizer(model, sft)
    data = {"train": cli._sft_rows(str(workspace / "sft.jsonl")), "eval": []}
    config = cli.build_config("sft", sft, workspace / f"out-{args.child}", tokenizer, False)
    trainer = cli.build_trainer("sft", config, sft, model, data, tokenizer)
    result = bench.timed_training(trainer, args.warmup)
    result["tokens_per_second"] = result["tokens"] / result["train_seconds"]
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=400)
    bench.add_run_args(parser, threads=2, rule="the rule's 2")
    args = parser.parse_args()
    if args.child:
        return run_child(args)

    overrides = bench.model_overrides(args)
    with tempfile.TemporaryDirectory(prefix="sft-packing-") as scratch:
        workspace = Path(scratch)
        rows = bench.rows(args.examples)
        bench.write_jsonl(workspace / "sft.jsonl", rows)
        bench.build_model(workspace, rows, overrides)
        common = bench.child_args(args, scratch)
        script = str(Path(__file__).resolve())
        results = {mode: [] for mode in MODES}
        for _ in range(args.repeats):
            for mode in MODES:
                results[mode].append(bench.child(script, [mode, *common], args.threads))
    best = {mode: max(runs, key=lambda r: r["tokens_per_second"]) for mode, runs in results.items()}
    sft, pinned = bench.tiny_experiment()["sft"], best["none"]["capability"]
    print(bench.stand_in_line(overrides, f"{args.examples} examples", sft, args.threads, pinned))
    for mode, run in best.items():
        every = ", ".join(f"{r['tokens_per_second']:.0f}" for r in results[mode])
        print(
            f"{mode:>12}: {run['tokens_per_second']:.0f} tokens/s ({run['tokens']} tokens in "
            f"{run['measured_steps']} steps, {run['step_seconds']:.3f} s/step; runs: {every}), "
            f"peak RSS {run['peak_rss_mb']:.0f} MB"
        )
    base = best["none"]["tokens_per_second"]
    parts = [f"none {base:.0f} tokens/s"] + [
        f"{mode} {best[mode]['tokens_per_second']:.0f} tokens/s "
        f"({best[mode]['tokens_per_second'] / base:.2f}x)"
        for mode in MODES[1:]
    ]
    print("sft packing: " + ", ".join(parts))


if __name__ == "__main__":
    main()
