"""Samples/s of our generation loop against a seed-style loop, same model and questions, one run.

Ours: the frontier loop (`run_frontier`) driving the transformers engine one decoding step at a
time (continuous batching, prefix cache) and the sandbox pool running code while the model
works. Seed-style, as the original drove its server: one request per solution, one model call
(a plain `generate` that re-reads the whole prompt) per block, sequential, code run through the
same executor and waited for. Both use the `tiny` experiment's generation and sampling settings
(config/config.yaml), naive sampling tasks on the same synthetic questions, and the same model.

    python perf/generation_throughput.py [--model DIR] [--questions N] [--seed-questions 16]
    python perf/generation_throughput.py --no-seed-style --backend '{"engine":"vllm"}'

`--backend` replaces the experiment's `generation.backend` block (schema defaults filled in): the
GPU check (perf/gpu_check.sh) runs our loop on vLLM and on the transformers engine on CUDA,
same model and questions.

Ours runs on one chunk of questions (`generation.chunk_size`, 200: what a sampling job's frontier
holds at once); seed-style on the first 16 of them (it does one solution at a time, so its rate
does not depend on how many it is given; all 200 would take minutes). Ours on those 16 alone is
printed too. Torch runs one thread in both (on 2 shared cores a second thread only fights the
sandbox workers and other jobs).

The model is `--model`, else results/tiny/models/sft when it has been trained, else the embedded
tiny Llama built untrained in a temporary folder (its samples run to the token limit: a
throughput figure, not a realistic one). The last line printed is the headline, e.g.
`generation: ours 35.2 samples/s, seed-style 2.1 samples/s, 16.8x`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml

from scdpo.config import fill_defaults
from scdpo.generation.backends import Completion, Request, make_backend
from scdpo.generation.job import loop_settings, sandbox_pool
from scdpo.generation.loop import LoopSettings, LoopStats, execute, extend, run_frontier
from scdpo.generation.transformers_engine import TransformersBackend
from scdpo.problems import synthetic_problems
from scdpo.sampling import SamplingTask, sampling_settings
from scdpo.solution import Block, render_prompt, render_solution

REPO = Path(__file__).resolve().parents[1]
TRAINED = REPO / "results" / "tiny" / "models" / "sft"


class SeedStyleBackend:
    """One prompt per call, encoded in full each time, sampled by `generate` (temperature only)."""

    def __init__(self, backend: TransformersBackend) -> None:
        self.model, self.tokenizer = backend.model, backend.tokenizer
        self.stop_ids, self.pad_id = backend.stop_ids, backend.pad_id

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    @torch.no_grad()
    def generate(self, requests: list[Request], max_new_tokens: int) -> list[Completion]:
        [request] = requests  # one request per call, as the seed's HTTP client
        encoded = self.tokenizer(request.prompt, return_tensors="pt", add_special_tokens=False)
        torch.manual_seed(request.seed)
        sampling = (
            {"do_sample": True, "temperature": request.temperature, "top_k": 0, "top_p": 1.0}
            if request.temperature > 0
            else {"do_sample": False}
        )
        output = self.model.generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            eos_token_id=list(self.stop_ids),
            pad_token_id=self.pad_id,
            **sampling,
        )
        new = output[0, encoded.input_ids.shape[1] :].tolist()
        stop = self.stop_ids.get(new[-1]) if new else None
        kept = new[:-1] if stop else new
        text = self.tokenizer.decode(kept, skip_special_tokens=False)
        return [Completion(text, stop, len(new))]


def seed_style_loop(tasks, backend, executor, settings: LoopSettings) -> LoopStats:
    """Question after question, solution after solution, block after block."""
    stats = LoopStats()
    for task in tasks:
        queue = task.start()
        while queue:
            partial = queue.pop(0)
            while not (partial.finished or partial.truncated):
                extend([partial], backend, settings, stats)
                done = partial.finished or partial.truncated
                if not done and partial.blocks[-1].kind == "code":
                    output = execute(partial, executor).result()[-1]
                    partial.blocks.append(Block("execution", output))
                    stats.code_blocks += 1
            stats.solutions += 1
            queue += task.retire(partial)
    return stats


def tiny_experiment(backend: dict | None = None) -> dict:
    """The embedded default's experiment; `backend` replaces its generation.backend block."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    if backend is not None:
        config["experiments"]["tiny"]["generation"]["backend"] = backend
    fill_defaults(config, yaml.safe_load((REPO / "config" / "schema.yaml").read_text()))
    return config["experiments"]["tiny"]


def untrained_model(spec: dict, system: str, folder: str) -> str:
    from scdpo.modeling import build_base_model

    problems = synthetic_problems(2000, seed=1, max_ops=3)
    corpus = (
        render_prompt(p["question"], system)
        + render_solution([Block.from_json(b) for b in p["blocks"]])
        for p in problems
    )
    build_base_model(spec["model"], corpus, folder)
    return folder


def measure(name: str, loop, tasks, backend, pool, settings: LoopSettings) -> float:
    started = time.perf_counter()
    stats = loop(tasks, backend, pool, settings)
    seconds = time.perf_counter() - started
    records = [task.record() for task in tasks]
    samples = sum(len(r["samples"]) for r in records)
    preferred = sum(s["preferred"] for r in records for s in r["samples"])
    dispreferred = sum(s["dispreferred"] for r in records for s in r["samples"])
    assert samples == stats.solutions
    print(
        f"{name}: {len(tasks)} questions, {samples} samples ({preferred} preferred, "
        f"{dispreferred} dispreferred), {stats.model_calls} block calls"
        f"{f' in {stats.rounds} decoding steps' if stats.rounds else ''}, "
        f"{stats.code_blocks} code runs, {stats.tokens} tokens in {seconds:.1f}s: "
        f"{samples / seconds:.2f} samples/s, {stats.tokens / seconds:.0f} tokens/s "
        f"({stats.tokens_per_second():.0f} tokens/s of model time)",
        flush=True,
    )
    return samples / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: see the module docstring)")
    parser.add_argument("--untrained", action="store_true", help="the untrained tiny Llama")
    parser.add_argument(
        "--questions",
        type=int,
        help="questions for our loop (default: the experiment's chunk_size, the frontier a "
        "sampling job holds at once)",
    )
    parser.add_argument(
        "--seed-questions",
        type=int,
        default=16,
        help="the first N of the same questions for the seed-style loop (its rate does not "
        "depend on N: it does one solution at a time)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both loops")
    parser.add_argument("--workers", type=int, default=2, help="sandbox workers, both loops")
    parser.add_argument("--backend", type=json.loads, help="generation.backend block as JSON")
    parser.add_argument("--no-seed-style", action="store_true", help="our loop only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = tiny_experiment(args.backend)
    generation = spec["generation"]
    settings = loop_settings(generation, spec["seed"])
    task_settings = sampling_settings(spec)
    data = spec["data"]["dpo"]
    count = args.questions or generation["chunk_size"]
    problems = synthetic_problems(count, data["seed"], data["max_ops"], data["offset"])
    few = problems[: args.seed_questions]
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if model is None and not args.untrained:
            model = str(TRAINED) if (TRAINED / "config.json").exists() else None
        if model is None:
            print("using the embedded tiny Llama, untrained")
            model = untrained_model(spec, spec["system_prompt"], f"{scratch}/model")
        print(f"model {model}; {args.threads} torch thread(s), {args.workers} sandbox workers")
        engine = generation["backend"]
        if args.backend is None:
            backend = TransformersBackend(model, "cpu", engine["batch_size"])
        else:
            backend = make_backend(engine, model)
        with sandbox_pool(spec["sandbox"], args.workers) as pool:
            for _ in range(2 * args.workers):  # the workers are up before the clock starts
                pool.run(["print(1)"])
            warm = [Request(render_prompt("1 + 1?", spec["system_prompt"]), 1.0, 0)]
            backend.generate(warm, 4)

            def sampling_tasks(questions):
                return [SamplingTask(p, task_settings) for p in questions]

            ours = measure("ours", run_frontier, sampling_tasks(problems), backend, pool, settings)
            if isinstance(backend, TransformersBackend):
                print(
                    f"ours: prompt tokens encoded {backend.prefill_computed}, "
                    f"taken from the prefix cache {backend.prefill_reused}",
                    flush=True,
                )
            if args.no_seed_style:
                print(
                    f"generation ({json.dumps(engine, sort_keys=True)}): ours {ours:.1f} samples/s"
                )
                return
            measure(
                "ours, seed-style's questions only",
                run_frontier,
                sampling_tasks(few),
                backend,
                pool,
                settings,
            )
            seed = measure(
                "seed-style",
                seed_style_loop,
                sampling_tasks(few),
                SeedStyleBackend(backend),
                pool,
                settings,
            )
    print(
        f"generation: ours {ours:.1f} samples/s, seed-style {seed:.1f} samples/s, "
        f"{ours / seed:.1f}x"
    )


if __name__ == "__main__":
    main()
