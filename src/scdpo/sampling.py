"""d-e. Naive sampling: adaptive rounds per question until one preferred and one dispreferred
solution exist or K were drawn; every sample graded and labelled."""

from __future__ import annotations

from dataclasses import dataclass

from scdpo.generation.job import Stage
from scdpo.generation.loop import Partial
from scdpo.generation.runner import shard_slice
from scdpo.jsonl import read_jsonl
from scdpo.labels import Rubric, problem_fields, rubric_of, sample_record


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float
    max_samples: int  # K
    round_size: int
    rubric: Rubric


def sampling_settings(params: dict) -> SamplingSettings:
    """Naive sampling as an experiment's `sampling`, `system_prompt` and `noise` blocks say."""
    sampling = params["sampling"]
    return SamplingSettings(
        temperature=sampling["temperature"],
        max_samples=sampling["max_samples"],
        round_size=sampling["round_size"],
        rubric=rubric_of(params),
    )


class SamplingTask:
    def __init__(self, problem: dict, settings: SamplingSettings) -> None:
        self.problem = problem
        self.settings = settings
        self.prompt = settings.rubric.prompt(problem["question"])
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
        verdict = self.settings.rubric.judge(partial, self.problem["answer"])
        self.samples.append(sample_record(partial, verdict))
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
        # Samples are in the order they finished (issue 13 makes this the draw order).
        return {**problem_fields(self.problem), "samples": self.samples}


def sampling_stage(problems_path: str, shard: int, shards: int, params: dict) -> Stage:
    """Naive sampling of one shard of the training questions."""
    settings = sampling_settings(params)
    return Stage(
        desc=f"sampling shard {shard + 1}/{shards}",
        items=shard_slice(list(read_jsonl(problems_path)), shard, shards),
        make_task=lambda problem: SamplingTask(problem, settings),
        summarize=summarize,
    )


def summarize(records: list[dict]) -> str:
    samples = [s for r in records for s in r["samples"]]
    pairs = sum(
        any(s["preferred"] for s in r["samples"]) and any(s["dispreferred"] for s in r["samples"])
        for r in records
    )
    return (
        f"questions {len(records)}; samples drawn {len(samples)} "
        f"(preferred {sum(s['preferred'] for s in samples)}, "
        f"dispreferred {sum(s['dispreferred'] for s in samples)}, "
        f"noisy {sum(s['noisy'] for s in samples)}); naive pairs {pairs}"
    )
