"""g. Step-controlled negatives: continue a preferred solution from its split points at an
ascending temperature until a continuation ends on a wrong answer (bounded tries), at most N_neg
per question."""

from __future__ import annotations

import random
from dataclasses import dataclass

from scdpo.generation.job import Stage
from scdpo.generation.loop import Partial, derive_seed
from scdpo.generation.runner import shard_slice
from scdpo.jsonl import read_jsonl
from scdpo.labels import Rubric, problem_fields, rubric_of, sample_record
from scdpo.solution import Block, split_points


@dataclass(frozen=True)
class TemperatureSchedule:
    """Temperature of the j-th newly generated block (j from 0): min(start + step * j, cap)."""

    start: float
    step: float
    cap: float

    def at(self, j: int) -> float:
        return round(min(self.start + self.step * j, self.cap), 6)


SCHEDULE_PRESETS = {
    "paper": TemperatureSchedule(1.1, 0.05, 1.4),
    "released_code": TemperatureSchedule(1.1, 0.1, 1.4),
}


def schedule_from(spec: str | dict) -> TemperatureSchedule:
    """`schedule: paper | released_code` or explicit {start, step, cap}."""
    if isinstance(spec, str):
        return SCHEDULE_PRESETS[spec]
    return TemperatureSchedule(spec["start"], spec["step"], spec["cap"])


@dataclass(frozen=True)
class StepControlSettings:
    schedule: TemperatureSchedule
    max_tries: int  # per split point
    max_pairs: int  # N_neg per question (a source's max_sc_pairs overrides it)
    seed: int
    rubric: Rubric


def step_control_settings(params: dict) -> StepControlSettings:
    step = params["step_control"]
    return StepControlSettings(
        schedule=schedule_from(step["schedule"]),
        max_tries=step["max_tries"],
        max_pairs=step["max_pairs"],
        seed=params["seed"],
        rubric=rubric_of(params),
    )


class StepControlTask:
    """Continue a preferred solution from its split points until a continuation goes wrong."""

    def __init__(self, problem: dict, chosen: list[Block], settings: StepControlSettings) -> None:
        self.problem = problem
        self.chosen = chosen
        self.settings = settings
        self.prompt = settings.rubric.prompt(problem["question"])
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
        verdict = self.settings.rubric.judge(partial, self.problem["answer"])
        if verdict.dispreferred:
            self.negatives.append(
                {"k": k, "tries": self.tries[k], **sample_record(partial, verdict)}
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
            **problem_fields(self.problem),
            "chosen": [b.to_json() for b in self.chosen],
            "split_points": sorted(split_points(self.chosen)),
            "tries": {str(k): n for k, n in sorted(self.tries.items())},
            "negatives": sorted(self.negatives, key=lambda n: n["k"]),
        }


def step_control_stage(samples_path: str, shard: int, shards: int, params: dict) -> Stage:
    """Continuations from split points of each question's first preferred solution."""
    questions = [q for q in read_jsonl(samples_path) if any(s["preferred"] for s in q["samples"])]
    settings = step_control_settings(params)

    def make_task(question: dict) -> StepControlTask:
        chosen = next(s for s in question["samples"] if s["preferred"])
        return StepControlTask(question, [Block.from_json(b) for b in chosen["blocks"]], settings)

    return Stage(
        desc=f"step-controlled shard {shard + 1}/{shards}",
        items=shard_slice(questions, shard, shards),
        make_task=make_task,
        summarize=summarize,
    )


def summarize(records: list[dict]) -> str:
    return (
        f"questions {len(records)} (with a negative {sum(bool(q['negatives']) for q in records)}); "
        f"tries {sum(sum(q['tries'].values()) for q in records)}; "
        f"step-controlled negatives {sum(len(q['negatives']) for q in records)}"
    )
