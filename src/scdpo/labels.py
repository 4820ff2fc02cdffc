"""The method's labels of a finished or cut-off solution, and the record fields they go in.

Preferred = finished, right and clean (no error talk, not noisy); dispreferred = finished and
wrong (not noisy). Shared by sampling, step-controlled generation and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from scdpo.grading import grade
from scdpo.solution import Block, NoiseLimits, final_text, is_noisy, mentions_error, render_prompt


class Generated(Protocol):
    """What the labels need of a generated solution (generation.loop.Partial has it)."""

    blocks: list[Block]
    temperatures: list[float]
    finished: bool

    def generated_blocks(self) -> list[Block]: ...


@dataclass(frozen=True)
class Verdict:
    correct: bool
    preferred: bool
    dispreferred: bool
    noisy: bool


def judge(blocks: list[Block], finished: bool, answer: str, limits: NoiseLimits) -> Verdict:
    noisy = is_noisy(blocks, limits)
    correct = finished and grade(final_text(blocks), answer)
    return Verdict(
        correct=correct,
        preferred=correct and not noisy and not mentions_error(blocks),
        dispreferred=finished and not correct and not noisy,
        noisy=noisy,
    )


@dataclass(frozen=True)
class Rubric:
    """How every generation stage prompts a question and judges a solution to it."""

    system: str
    noise: NoiseLimits

    def prompt(self, question: str) -> str:
        return render_prompt(question, self.system)

    def judge(self, solution: Generated, answer: str) -> Verdict:
        return judge(solution.blocks, solution.finished, answer, self.noise)


def rubric_of(params: dict) -> Rubric:
    """The rubric of an experiment's `system_prompt` and `noise` blocks."""
    return Rubric(params["system_prompt"], NoiseLimits(**params["noise"]))


def sample_record(solution: Generated, verdict: Verdict) -> dict:
    """The generated blocks with their temperatures and labels (the prefix is not repeated)."""
    return {
        "blocks": [b.to_json() for b in solution.generated_blocks()],
        "temperatures": solution.temperatures,
        "finished": solution.finished,
        **vars(verdict),
    }


def problem_fields(problem: dict) -> dict:
    return {"id": problem["id"], "question": problem["question"], "answer": problem["answer"]}
