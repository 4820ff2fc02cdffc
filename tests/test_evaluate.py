"""An evaluation job's parts: one output per benchmark, or per pilot temperature on one file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scdpo.evaluate import prediction_parts
from scdpo.generation.job import shared

PARAMS = {"format": "code", "system_prompt": "Solve.", "seed": 0, "noise": {}}


def _questions(path: Path, n: int) -> str:
    rows = [{"id": f"q{i}", "question": f"{i} + 1?", "answer": str(i + 1)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_one_part_per_benchmark_with_its_own_questions(tmp_path: Path) -> None:
    files = [_questions(tmp_path / "a.jsonl", 2), _questions(tmp_path / "b.jsonl", 3)]
    parts = prediction_parts(
        {"a": PARAMS, "b": {**PARAMS, "seed": 1}}, files, str(tmp_path / "out"), lambda o: o + ".r"
    )
    assert [len(p.stage.items) for p in parts] == [2, 3]
    assert [Path(p.out_path).name for p in parts] == ["a.jsonl", "b.jsonl"]
    assert parts[1].params["seed"] == 1 and parts[1].resume_path.endswith("b.jsonl.r")


@pytest.mark.parametrize("as_list", [False, True])
def test_every_pilot_temperature_reads_the_one_file(tmp_path: Path, as_list: bool) -> None:
    file = _questions(tmp_path / "pilot.jsonl", 4)  # Snakemake passes one named file as a str
    temperatures = {f"t{t}": {**PARAMS, "temperature": t} for t in (0.0, 0.5, 1.0)}
    parts = prediction_parts(temperatures, [file] if as_list else file, str(tmp_path), str)
    assert [len(p.stage.items) for p in parts] == [4, 4, 4]
    assert [Path(p.out_path).name for p in parts] == ["t0.0.jsonl", "t0.5.jsonl", "t1.0.jsonl"]


def test_a_question_file_per_part_or_one_for_all(tmp_path: Path) -> None:
    files = [_questions(tmp_path / f"{n}.jsonl", 1) for n in "abc"]
    with pytest.raises(ValueError, match="2 parts but 3 question files"):
        prediction_parts({"a": PARAMS, "b": PARAMS}, files, str(tmp_path), str)


def test_parts_share_the_engine_and_sandbox_and_may_differ_in_the_rest(tmp_path: Path) -> None:
    """paper.yaml's benchmarks have their own tool-call limits (GSM8K 24, MATH 16): one job
    evaluates a model on both with one engine."""
    backend = {"engine": "vllm", "tensor_parallel_size": 1}
    gsm8k, math = ({**PARAMS, "generation": {"backend": backend, "max_calls": n}} for n in (24, 16))
    files = [_questions(tmp_path / f"{n}.jsonl", 1) for n in ("gsm8k", "math")]
    parts = prediction_parts({"gsm8k": gsm8k, "math": math}, files, str(tmp_path), str)
    assert shared(parts, "generation", "backend") == backend
    assert [p.params["generation"]["max_calls"] for p in parts] == [24, 16]
    other = {**math, "generation": {"backend": {**backend, "tensor_parallel_size": 2}}}
    parts = prediction_parts({"gsm8k": gsm8k, "math": other}, files, str(tmp_path), str)
    with pytest.raises(ValueError, match="differ in generation.backend"):
        shared(parts, "generation", "backend")
