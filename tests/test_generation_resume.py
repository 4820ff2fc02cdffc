"""Generation survives SIGKILL and is reproducible (issue 5).

A tiny Llama (trained for a few seconds, so that it writes blocks, code and answers) samples a
dozen synthetic questions through `scdpo.sampling.sampling_stage` and
`scdpo.generation.job.run_stage`, what the `solutions_sample` rule calls:

- determinism: two runs in different processes write byte-identical sample files;
- kill and resume: a run in a subprocess is SIGKILLed after it has saved 1, then 3 chunks to its
  resume file, re-run each time, and the final file equals the uninterrupted run's, record for
  record: nothing lost, nothing duplicated;
- Snakemake: the `solutions_sample` job of the real workflow (this repository's Snakefile, a
  micro config) is SIGKILLed with its process group mid-job and re-run with
  `--rerun-incomplete`; the job resumes from its resume file and the merged samples equal the
  uninterrupted run's.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from fakes import SCHEMA
from workflow_run import REPO, snakemake_command

from scdpo.config import fill_defaults
from scdpo.jsonl import read_jsonl, write_jsonl
from scdpo.problems import synthetic_problems
from scdpo.solution import Block, render_prompt, render_solution

SHARDS = 2
QUESTIONS = 12  # 6 per shard; one question per chunk, so 6 chunks per shard
SYSTEM = "Solve with Python."
MODEL = {
    "source": "scratch",
    "vocab_size": 300,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_layers": 2,
    "num_heads": 2,
    "max_position_embeddings": 512,
    "seed": 0,
}

# Runs naive sampling for each listed shard, in a fresh interpreter.
RUNNER = textwrap.dedent(
    """
    import json, logging, sys
    import torch
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from scdpo.generation.job import run_stage
    from scdpo.sampling import sampling_stage
    job = json.load(open(sys.argv[1]))
    for run in job["runs"]:
        stage = sampling_stage(job["problems"], run["shard"], job["shards"], job["params"])
        run_stage(stage, job["model"], job["params"], run["out"], run["resume"], 1)
    """
)


def micro_experiment() -> dict:
    """The embedded `tiny` experiment with micro numbers (what the workflow's config holds)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    spec = copy.deepcopy(config["experiments"]["tiny"])
    spec["model"] = dict(MODEL)
    spec["system_prompt"] = SYSTEM
    spec["generation"].update(
        backend={"engine": "transformers", "device": "cpu", "batch_size": 8},
        max_new_tokens=24,
        max_calls=6,
        max_prompt_tokens=200,
        chunk_size=1,
    )
    spec["sampling"].update(temperature=1.0, max_samples=4, round_size=2, shards=SHARDS)
    spec["data"]["dpo"].update(n=QUESTIONS, max_ops=1)
    return fill_defaults(spec, SCHEMA["$defs"]["experiment"], SCHEMA)


def sampling_params(spec: dict) -> dict:
    """What the `solutions_sample` rule passes (rules/common.smk: generation_params)."""
    keys = ("format", "system_prompt", "seed", "generation", "sandbox", "noise")
    params = {key: spec[key] for key in keys}
    params["sampling"] = {k: v for k, v in spec["sampling"].items() if k != "shards"}
    return params


def train_tiny_model(folder: Path) -> None:
    """A 2-layer Llama trained for a few seconds: enough to write blocks, code and answers."""
    from scdpo.modeling import build_base_model, load, save

    problems = synthetic_problems(400, seed=1, max_ops=1)
    texts = [
        render_prompt(p["question"], SYSTEM)
        + render_solution([Block.from_json(b) for b in p["blocks"]])
        for p in problems
    ]
    build_base_model(MODEL, texts, folder)
    model, tokenizer = load(folder)
    tokenizer.padding_side = "right"
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(80):
        batch = torch.randint(len(texts), (16,), generator=generator).tolist()
        encoded = tokenizer(
            [texts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False
        )
        labels = encoded.input_ids.masked_fill(encoded.attention_mask == 0, -100)
        model(**encoded, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    save(model, tokenizer, folder)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """Model, questions, params, and the uninterrupted run of both shards (a fresh process)."""
    root = tmp_path_factory.mktemp("generation")
    spec = micro_experiment()
    train_tiny_model(root / "model")
    data = spec["data"]["dpo"]
    problems = synthetic_problems(data["n"], data["seed"], data["max_ops"], data["offset"])
    write_jsonl(root / "problems.jsonl", problems)
    job = {
        "model": str(root / "model"),
        "problems": str(root / "problems.jsonl"),
        "shards": SHARDS,
        "params": sampling_params(spec),
    }
    reference = [root / f"reference{shard}.jsonl" for shard in range(SHARDS)]
    runs = [
        {"shard": shard, "out": str(reference[shard]), "resume": str(root / f"ref{shard}.resume")}
        for shard in range(SHARDS)
    ]
    process = start(root, {**job, "runs": runs}, "reference")
    assert process.wait(timeout=300) == 0, log_of(root, "reference")
    return {"root": root, "spec": spec, "job": job, "reference": reference}


def start(root: Path, job: dict, name: str) -> subprocess.Popen:
    """The runner in its own process group (as a batch system starts a job)."""
    (root / f"{name}.json").write_text(json.dumps(job))
    (root / "runner.py").write_text(RUNNER)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    with open(root / f"{name}.log", "w") as log:
        return subprocess.Popen(
            [sys.executable, str(root / "runner.py"), str(root / f"{name}.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def log_of(root: Path, name: str) -> str:
    return (root / f"{name}.log").read_text()[-4000:]


def saved_chunks(path: Path) -> int:
    """Whole lines in a resume file (a torn last line does not count)."""
    if not path.exists():
        return 0
    return path.read_bytes().count(b"\n")


def kill_after(process: subprocess.Popen, resume: Path, chunks: int, timeout: float = 240) -> int:
    """SIGKILL the process group once `chunks` chunks are saved; returns the chunks saved."""
    deadline = time.monotonic() + timeout
    while saved_chunks(resume) < chunks:
        if process.poll() is not None:
            pytest.fail(f"the run ended (rc {process.returncode}) before saving {chunks} chunks")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"no {chunks} chunks saved within {timeout} s")
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    return saved_chunks(resume)


def assert_same_records(path: Path, expected: list[Path]) -> None:
    got = list(read_jsonl(path))
    want = [record for file in expected for record in read_jsonl(file)]
    assert [r["id"] for r in got] == [r["id"] for r in want], "questions lost or duplicated"
    for index, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a == b, f"record {index} ({a['id']}) differs from the uninterrupted run"


def test_the_tiny_model_exercises_the_whole_loop(setup):
    records = [r for path in setup["reference"] for r in read_jsonl(path)]
    assert len(records) == QUESTIONS
    samples = [s for r in records for s in r["samples"]]
    kinds = {b["kind"] for s in samples for b in s["blocks"]}
    # Code was written and run in the sandbox; solutions were finished and graded.
    assert {"text", "code", "execution"} <= kinds
    assert any(s["finished"] for s in samples)


def test_same_config_and_seed_give_byte_identical_samples(setup):
    """A second run, in this process (other state than the reference's fresh interpreter)."""
    from scdpo.generation.job import run_stage
    from scdpo.sampling import sampling_stage

    root, job = setup["root"], setup["job"]
    for shard in range(SHARDS):
        out = root / f"again{shard}.jsonl"
        stage = sampling_stage(job["problems"], shard, SHARDS, job["params"])
        run_stage(
            stage, job["model"], job["params"], str(out), str(root / f"again{shard}.resume"), 1
        )
        assert out.read_bytes() == setup["reference"][shard].read_bytes()


def test_rows_do_not_depend_on_batch_mates_and_cached_prefixes_change_nothing(setup):
    """The transformers engine: a request's tokens are the same alone or in a batch, and a
    continuation served from the prefix cache equals plain greedy `generate` from scratch."""
    from scdpo.generation.backends import Request
    from scdpo.generation.transformers_engine import TransformersBackend

    backend = TransformersBackend(setup["job"]["model"], batch_size=6)
    problems = list(read_jsonl(setup["job"]["problems"]))[:4]
    prompts = [render_prompt(p["question"], SYSTEM) for p in problems]
    requests = [Request(p, 1.0, seed) for seed, p in enumerate(prompts * 3)]  # > batch_size
    together = backend.generate(requests, 24)
    backend.reset()
    alone = [backend.generate([r], 24)[0] for r in requests[:4]]
    assert alone == together[:4]
    # Greedy, twice: the second call's prompts extend the first's (served from the cache).
    backend.reset()
    first = backend.generate([Request(p, 0.0, 0) for p in prompts], 24)
    texts = [p + c.text + c.stop for p, c in zip(prompts, first, strict=True) if c.stop]
    assert texts, "the tiny model ended no block"
    computed = backend.prefill_computed
    second = backend.generate([Request(t, 0.0, 0) for t in texts], 24)
    # The second prompts are the first calls' prompts and outputs: nearly all from the cache.
    total = sum(backend.count_tokens(t) for t in texts)
    assert backend.prefill_computed - computed < total / 4
    model, tokenizer = backend.model, backend.tokenizer
    for text, completion in zip(texts, second, strict=True):
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
        out = model.generate(
            ids,
            max_new_tokens=24,
            do_sample=False,
            eos_token_id=list(backend.stop_ids),
            pad_token_id=backend.pad_id,
        )
        expected = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=False)
        assert expected.startswith(completion.text)


class StreamingScript:
    """The scripted fake as a streaming engine: a completion of n tokens takes n steps."""

    def __init__(self) -> None:
        from fakes import ScriptedBackend

        self.script, self.running, self.steps = ScriptedBackend(), [], 0

    def count_tokens(self, text: str) -> int:
        return self.script.count_tokens(text)

    def add(self, key, request, max_new_tokens) -> None:
        [completion] = self.script.generate([request], max_new_tokens)
        self.running.append([completion.tokens, key, completion])

    def step(self):
        self.steps += 1
        for row in self.running:
            row[0] -= 1
        done = [(key, completion) for left, key, completion in self.running if left <= 0]
        self.running = [row for row in self.running if row[0] > 0]
        return done


def test_streaming_and_round_drivers_give_the_same_records():
    """All three tasks; a streaming engine's rows end at different steps and interleave."""
    from fakes import RUBRIC, ScriptedBackend, questions, sampling_settings, step_control_settings

    from scdpo.evaluate import AnswerTask
    from scdpo.generation.loop import LoopSettings, run_frontier
    from scdpo.sampling import SamplingTask
    from scdpo.sandbox import SandboxConfig, SandboxPool
    from scdpo.step_control import StepControlTask

    chosen = [
        Block("text", "Compute it."),
        Block("code", "print(2)"),
        Block("execution", "2\n"),
        Block("text", "So \\boxed{2}."),
    ]
    settings = LoopSettings(
        max_new_tokens=16, max_calls=16, max_prompt_tokens=1000, seed=3, code_delay_steps=2
    )

    def tasks():
        return (
            [SamplingTask(q, sampling_settings(max_samples=8, round_size=2)) for q in questions(6)]
            + [StepControlTask(q, chosen, step_control_settings(max_tries=3)) for q in questions(3)]
            + [AnswerTask(q, 0.0, RUBRIC) for q in questions(3)]
        )

    def canonical(task_list):
        # Retirement order differs between drivers; records are in draw order regardless.
        return [t.record() for t in task_list]

    with SandboxPool(workers=2, config=SandboxConfig(timeout=5.0)) as pool:
        by_rounds, streamed = tasks(), tasks()
        run_frontier(by_rounds, ScriptedBackend(), pool, settings)
        engine = StreamingScript()
        stats = run_frontier(streamed, engine, pool, settings)
    assert canonical(streamed) == canonical(by_rounds)
    assert stats.rounds == engine.steps and stats.code_blocks > 0


def test_vllm_completions_read_the_stop_marker_off_the_last_token():
    """vLLM reports the model's EOS (<|endofmessage|>) with stop_reason None; vllm is not needed
    (nor installed) to check how its outputs are read."""
    from types import SimpleNamespace

    from scdpo.generation.vllm_engine import VLLMBackend

    class Tokenizer:
        def decode(self, ids, skip_special_tokens):
            return "".join(f"<{i}>" for i in ids)

    backend = VLLMBackend.__new__(VLLMBackend)
    backend.tokenizer, backend.stop_ids = Tokenizer(), {7: "<|endofblock|>", 8: "<|endofmessage|>"}
    eos = backend._completion(SimpleNamespace(token_ids=[1, 2, 8], finish_reason="stop"))
    assert (eos.text, eos.stop, eos.tokens) == ("<1><2>", "<|endofmessage|>", 3)
    block = backend._completion(SimpleNamespace(token_ids=(3, 7), finish_reason="stop"))
    assert (block.text, block.stop) == ("<3>", "<|endofblock|>")
    cut = backend._completion(SimpleNamespace(token_ids=[3, 4], finish_reason="length"))
    assert (cut.text, cut.stop, cut.tokens) == ("<3><4>", None, 2)
    assert "vllm" not in sys.modules  # nothing in the suite imports it


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_equals_the_uninterrupted_run(setup):
    root, job = setup["root"], setup["job"]
    out, resume = root / "killed0.jsonl", root / "killed0.resume"
    runs = [{"shard": 0, "out": str(out), "resume": str(resume)}]
    total = QUESTIONS // SHARDS
    for attempt, chunks in enumerate((1, 3)):
        process = start(root, {**job, "runs": runs}, f"killed{attempt}")
        saved = kill_after(process, resume, chunks)
        assert chunks <= saved < total, f"killed at {saved} of {total} chunks"
        assert not out.exists()
        if attempt:
            assert "resuming: " in log_of(root, f"killed{attempt}")
    process = start(root, {**job, "runs": runs}, "resumed")
    assert process.wait(timeout=300) == 0, log_of(root, "resumed")
    assert "resuming: " in log_of(root, "resumed")
    assert_same_records(out, setup["reference"][:1])
    assert out.read_bytes() == setup["reference"][0].read_bytes()
    assert not resume.exists()  # cleaned up once the output is written


@pytest.mark.slow
def test_snakemake_rerun_incomplete_resumes_a_killed_sampling_job(setup, tmp_path):
    """Snakemake deletes a killed job's incomplete outputs, never its resume file."""
    spec = setup["spec"]
    workdir = tmp_path / "workflow"
    shutil.copytree(setup["job"]["model"], workdir / "results/micro/models/sft")
    (workdir / "results/micro/problems").mkdir(parents=True)
    shutil.copy(setup["job"]["problems"], workdir / "results/micro/problems/dpo.jsonl")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["experiments"] = {"micro": spec}
    (workdir / "micro.yaml").write_text(yaml.safe_dump(config))
    target = "results/micro/sampling/samples.jsonl"
    config_file = str(workdir / "micro.yaml")
    snakemake = snakemake_command(workdir, "--configfile", config_file, "--cores", "1")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(
            [*snakemake, target],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    resume = workdir / "results/micro/.resume/sampling/shard0-of2.jsonl"
    saved = kill_after(first, resume, 2)
    assert 2 <= saved < QUESTIONS // SHARDS
    assert not (workdir / "results/micro/sampling/shard0-of2.jsonl").exists()

    def run(*args: str) -> None:
        result = subprocess.run(
            [*snakemake, *args],
            cwd=workdir,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout[-6000:]

    run("--unlock")  # a killed snakemake leaves its lock behind
    run("--rerun-incomplete", target)
    job_log = (workdir / "logs/solutions_sample/micro/shard0-of2.log").read_text()
    assert f"resuming: {saved} of {QUESTIONS // SHARDS} chunks already done" in job_log, job_log
    assert_same_records(workdir / target, setup["reference"])
    assert not resume.exists()
