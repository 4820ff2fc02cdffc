"""j. Evaluation: one solution per benchmark question (greedy, or at a fixed temperature for the
report's pilot), with code execution, the extracted answer and its verdict."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from scdpo.generation.job import Part, Stage
from scdpo.generation.loop import Partial
from scdpo.grading import predicted_answer
from scdpo.jsonl import read_jsonl
from scdpo.labels import Rubric, problem_fields, rubric_of
from scdpo.solution import final_text


class AnswerTask:
    """One solution per question: greedy (temperature 0) for evaluation."""

    def __init__(self, problem: dict, temperature: float, rubric: Rubric) -> None:
        self.problem = problem
        self.temperature_value = temperature
        self.rubric = rubric
        self.prompt = rubric.prompt(problem["question"])
        self.result: dict | None = None

    def start(self) -> list[Partial]:
        return [Partial(self, self.prompt, [], seed_key=f"answer/{self.problem['id']}")]

    def temperature(self, partial: Partial) -> float:
        return self.temperature_value

    def retire(self, partial: Partial) -> list[Partial]:
        verdict = self.rubric.judge(partial, self.problem["answer"])
        self.result = {
            **problem_fields(self.problem),
            "blocks": [b.to_json() for b in partial.blocks],
            "finished": partial.finished,
            "extracted": predicted_answer(final_text(partial.blocks)) if partial.finished else None,
            "correct": verdict.correct,
        }
        return []

    @property
    def done(self) -> bool:
        return self.result is not None

    def record(self) -> dict:
        assert self.result is not None
        return self.result


def evaluation_stage(problems_path: str, params: dict) -> Stage:
    """Answers of one model on one benchmark; `params.temperature` is absent for greedy."""
    temperature = params.get("temperature", 0.0)
    rubric = rubric_of(params)
    return Stage(
        desc="predict",
        items=list(read_jsonl(problems_path)),
        make_task=lambda p: AnswerTask(p, temperature, rubric),
        summarize=summarize,
    )


def prediction_parts(
    parts: Mapping[str, dict],
    questions: str | Sequence[str],
    out_dir: str,
    resume_of: Callable[[str], str],
) -> list[Part]:
    """One evaluation job's outputs: a part per name of `parts` ({benchmark or t<temperature>:
    params}), written to <out_dir>/<name>.jsonl, its questions from the matching file of
    `questions` (one file for every part: the pilot's temperatures)."""
    questions = [questions] if isinstance(questions, str) else list(questions)
    files = questions * len(parts) if len(questions) == 1 else questions
    if len(files) != len(parts):
        raise ValueError(f"{len(parts)} parts but {len(questions)} question files")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    made = []
    for (name, params), path in zip(parts.items(), files, strict=True):
        out = str(Path(out_dir) / f"{name}.jsonl")
        made.append(Part(evaluation_stage(path, params), params, out, resume_of(out)))
    return made


def summarize(records: list[dict]) -> str:
    right = sum(r["correct"] for r in records)
    return f"accuracy {right / len(records):.4f} on {len(records)} questions"
