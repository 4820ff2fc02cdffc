"""DPO step time and peak memory with the live reference model and with precomputed reference
log-probs (scdpo.train.reference, `dpo.reference: precomputed`), on the CPU stand-in.

    python perf/dpo_reference.py [--pairs 160] [--steps 8] [--warmup 2] [--repeats 2]
        [--threads 1] [--hidden-size 128] [--num-layers 4]

The stand-in is the embedded default's `tiny` model and `dpo` recipe (config/config.yaml: batch
16, max_length 384), on synthetic pairs (chosen: a problem's reference solution; rejected:
another problem's). Each mode trains in a fresh child process through the CLI's build_config /
build_trainer; the step time is the median over `--steps` optimizer steps after `--warmup`, the
best of `--repeats` runs per mode (live and precomputed alternate, so a busy neighbour on a shared
machine hits both); the peak memory is the child's peak RSS (the interpreter, torch and the data
included). The one-off reference pass (`train.py reference-logps` over the same pairs, once per
pair set for every training and seed) is timed too. The last line is the headline, e.g.
`dpo reference: live 0.412 s/step, precomputed 0.290 s/step, step-time ratio 0.70`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _training_bench as bench  # noqa: E402


def recipe(args: argparse.Namespace, precomputed: bool) -> dict:
    dpo = dict(bench.tiny_experiment()["dpo"])
    dpo.update(max_steps=args.warmup + args.steps, logging_steps=1000, epochs=100)
    dpo["reference"] = "precomputed" if precomputed else "live"
    return dpo


def run_child(args: argparse.Namespace) -> None:
    import torch

    from scdpo.train import cli

    torch.set_num_threads(args.threads)
    workspace = Path(args.workspace)
    mode = args.child
    precomputed = mode == "precomputed"
    dpo = recipe(args, precomputed)
    model = str(workspace / "model")
    tokenizer = cli.load_tokenizer(model, dpo)
    if mode == "reference":
        started = time.perf_counter()
        cli.reference_logps(
            argparse.Namespace(
                model=model,
                data=str(workspace / "pairs.jsonl"),
                eval_data=None,
                out=str(workspace / "ref.jsonl"),
            ),
            dpo,
        )
        print(json.dumps({"seconds": time.perf_counter() - started}))
        return
    cli_args = argparse.Namespace(
        data=str(workspace / "pairs.jsonl"),
        eval_data=None,
        reference_logps=str(workspace / "ref.jsonl") if precomputed else None,
    )
    data = cli._data("dpo", cli_args, dpo)
    config = cli.build_config("dpo", dpo, workspace / f"out-{mode}", tokenizer, False)
    trainer = cli.build_trainer("dpo", config, dpo, model, data, tokenizer)
    print(json.dumps(bench.timed_training(trainer, args.warmup)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=160)
    bench.add_run_args(parser, threads=1, rule="the rule's 1")
    args = parser.parse_args()
    if args.child:
        return run_child(args)

    overrides = bench.model_overrides(args)
    with tempfile.TemporaryDirectory(prefix="dpo-reference-") as scratch:
        workspace = Path(scratch)
        problems = bench.rows(2 * args.pairs, offset=500_000)
        chosen, others = problems[: args.pairs], problems[args.pairs :]
        pairs = [
            {"prompt": c["prompt"], "chosen": c["completion"], "rejected": o["completion"]}
            for c, o in zip(chosen, others, strict=True)
        ]
        bench.write_jsonl(workspace / "pairs.jsonl", pairs)
        bench.build_model(workspace, problems, overrides)
        common = bench.child_args(args, scratch)
        script = str(Path(__file__).resolve())
        reference = bench.child(script, ["reference", *common], args.threads)
        results = {"live": [], "precomputed": []}
        for _ in range(args.repeats):
            for mode in results:
                results[mode].append(bench.child(script, [mode, *common], args.threads))
    best = {mode: min(runs, key=lambda r: r["step_seconds"]) for mode, runs in results.items()}
    dpo, pinned = bench.tiny_experiment()["dpo"], best["live"]["capability"]
    print(bench.stand_in_line(overrides, f"{args.pairs} pairs", dpo, args.threads, pinned))
    seconds = reference["seconds"]
    print(f"reference pass (once per pair set): {seconds:.1f} s for {args.pairs} pairs")
    print(
        f"a model copy: {best['live']['model_mb']:.1f} MB of parameters (the live reference holds "
        "a second one; precomputed loads none)"
    )
    for mode, run in best.items():
        every = ", ".join(f"{r['step_seconds']:.3f}" for r in results[mode])
        print(
            f"{mode:>11}: {run['step_seconds']:.3f} s/step (median of {run['measured_steps']}; "
            f"runs: {every}), peak RSS {run['peak_rss_mb']:.0f} MB"
        )
    ratio = best["precomputed"]["step_seconds"] / best["live"]["step_seconds"]
    memory = best["precomputed"]["peak_rss_mb"] - best["live"]["peak_rss_mb"]
    print(
        f"dpo reference: live {best['live']['step_seconds']:.3f} s/step, precomputed "
        f"{best['precomputed']['step_seconds']:.3f} s/step, peak memory {memory:+.0f} MB, "
        f"step-time ratio {ratio:.2f}"
    )


if __name__ == "__main__":
    main()
