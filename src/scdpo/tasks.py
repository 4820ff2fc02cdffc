"""The three generation tasks of the method, as controllers for the frontier loop.

- `SamplingTask`: naive sampling, adaptive rounds until one preferred and one dispreferred
  solution exist or K were drawn.
- `StepControlTask`: continuations from split points of a preferred solution at an ascending
  temperature, until a wrong final answer (bounded tries), at most N_neg per question.
- `AnswerTask`: one solution per question (greedy for evaluation, or at a fixed temperature).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from scdpo.generation.loop import Partial, derive_seed
from scdpo.grading import grade
from scdpo.solution import (
    Block,
    NoiseLimits,
    final_text,
    is_noisy,
    mentions_error,
    render_prompt,
    split_points,
)


@dataclass(frozen=True)
class Verdict:
    correct: bool
    preferred: bool
    dispreferred: bool
    noisy: bool


def judge(partial: Partial, answer: str, limits: NoiseLimits) -> Verdict:
    """The method's labels: right and clean is preferred; finished and wrong is dispreferred."""
    blocks = partial.blocks
    noisy = is_noisy(blocks, limits)
    correct = partial.finished and grade(final_text(blocks), answer)
    return Verdict(
        correct=correct,
        preferred=correct and not noisy and not mentions_error(blocks),
        dispreferred=partial.finished and not correct and not noisy,
        noisy=noisy,
    )


def _sample_record(partial: Partial, verdict: Verdict) -> dict:
    return {
        "blocks": [b.to_json() for b in partial.generated_blocks()],
        "temperatures": partial.temperatures,
        "finished": partial.finished,
        **vars(verdict),
    }


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 1.0
    max_samples: int = 100  # K
    round_size: int = 4
    system: str = ""
    noise: NoiseLimits = NoiseLimits()


class SamplingTask:
    def __init__(self, problem: dict, settings: SamplingSettings) -> None:
        self.problem = problem
        self.settings = settings
        self.prompt = render_prompt(problem["question"], settings.system)
        self.samples: list[dict] = []
        self.outstanding = 0
        self.drawn = 0

    def _draw(self) -> list[Partial]:
        count = min(self.settings.round_size, self.settings.max_samples - self.drawn)
        partials = [
            Partial(self, self.prompt, [], seed_key=f"sample/{self.problem['id']}/{self.drawn + i}")
            for i in range(count)
        ]
        self.drawn += count
        self.outstanding += count
        return partials

    def start(self) -> list[Partial]:
        return self._draw()

    def temperature(self, partial: Partial) -> float:
        return self.settings.temperature

    def retire(self, partial: Partial) -> list[Partial]:
        verdict = judge(partial, self.problem["answer"], self.settings.noise)
        self.samples.append(_sample_record(partial, verdict))
        self.outstanding -= 1
        if self.outstanding or self.done:
            return []
        return self._draw()

    @property
    def done(self) -> bool:
        have_pair = any(s["preferred"] for s in self.samples) and any(
            s["dispreferred"] for s in self.samples
        )
        return have_pair or self.drawn >= self.settings.max_samples

    def record(self) -> dict:
        # Retirement order depends on lengths; sort by draw order for a canonical file.
        return {**_problem_fields(self.problem), "samples": self.samples}


@dataclass(frozen=True)
class TemperatureSchedule:
    """Temperature of the j-th newly generated block (j from 0): min(start + step * j, cap)."""

    start: float = 1.1
    step: float = 0.05
    cap: float = 1.4

    def at(self, j: int) -> float:
        return round(min(self.start + self.step * j, self.cap), 6)


SCHEDULE_PRESETS = {
    "paper": TemperatureSchedule(1.1, 0.05, 1.4),
    "released_code": TemperatureSchedule(1.1, 0.1, 1.4),
}


@dataclass(frozen=True)
class StepControlSettings:
    schedule: TemperatureSchedule = SCHEDULE_PRESETS["paper"]
    max_tries: int = 8  # per split point
    max_pairs: int = 2  # N_neg per question
    system: str = ""
    seed: int = 0
    noise: NoiseLimits = NoiseLimits()


class StepControlTask:
    """Continue a preferred solution from its split points until a continuation goes wrong."""

    def __init__(self, problem: dict, chosen: list[Block], settings: StepControlSettings) -> None:
        self.problem = problem
        self.chosen = chosen
        self.settings = settings
        self.prompt = render_prompt(problem["question"], settings.system)
        splits = split_points(chosen)
        random.Random(derive_seed(settings.seed, problem["id"])).shuffle(splits)
        self.untried = splits
        self.max_pairs = problem.get("max_sc_pairs", settings.max_pairs)
        self.tries: dict[int, int] = {}
        self.negatives: list[dict] = []
        self.active = 0

    def _try(self, k: int) -> Partial:
        self.tries[k] = self.tries.get(k, 0) + 1
        return Partial(
            self,
            self.prompt,
            list(self.chosen[: k + 1]),
            seed_key=f"sc/{self.problem['id']}/{k}/{self.tries[k]}",
            generated_from=k + 1,
            tag={"k": k},
        )

    def _next_split(self) -> list[Partial]:
        if self.untried and len(self.negatives) + self.active < self.max_pairs:
            self.active += 1
            return [self._try(self.untried.pop(0))]
        return []

    def start(self) -> list[Partial]:
        partials = []
        for _ in range(self.max_pairs):
            partials += self._next_split()
        return partials

    def temperature(self, partial: Partial) -> float:
        return self.settings.schedule.at(len(partial.temperatures))

    def retire(self, partial: Partial) -> list[Partial]:
        k = partial.tag["k"]
        verdict = judge(partial, self.problem["answer"], self.settings.noise)
        if verdict.dispreferred:
            self.negatives.append(
                {"k": k, "tries": self.tries[k], **_sample_record(partial, verdict)}
            )
        elif self.tries[k] < self.settings.max_tries:
            return [self._try(k)]
        self.active -= 1
        return self._next_split()

    @property
    def done(self) -> bool:
        return self.active == 0

    def record(self) -> dict:
        return {
            **_problem_fields(self.problem),
            "chosen": [b.to_json() for b in self.chosen],
            "split_points": sorted(split_points(self.chosen)),
            "tries": {str(k): n for k, n in sorted(self.tries.items())},
            "negatives": sorted(self.negatives, key=lambda n: n["k"]),
        }


class AnswerTask:
    """One solution per question: greedy (temperature 0) for evaluation."""

    def __init__(self, problem: dict, temperature: float, system: str, noise: NoiseLimits) -> None:
        self.problem = problem
        self.temperature_value = temperature
        self.noise = noise
        self.prompt = render_prompt(problem["question"], system)
        self.result: dict | None = None

    def start(self) -> list[Partial]:
        return [Partial(self, self.prompt, [], seed_key=f"answer/{self.problem['id']}")]

    def temperature(self, partial: Partial) -> float:
        return self.temperature_value

    def retire(self, partial: Partial) -> list[Partial]:
        from scdpo.grading import extract_answer

        verdict = judge(partial, self.problem["answer"], self.noise)
        self.result = {
            **_problem_fields(self.problem),
            "blocks": [b.to_json() for b in partial.blocks],
            "finished": partial.finished,
            "extracted": extract_answer(final_text(partial.blocks)) if partial.finished else None,
            "correct": verdict.correct,
        }
        return []

    @property
    def done(self) -> bool:
        return self.result is not None

    def record(self) -> dict:
        assert self.result is not None
        return self.result


def _problem_fields(problem: dict) -> dict:
    return {"id": problem["id"], "question": problem["question"], "answer": problem["answer"]}
