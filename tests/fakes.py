"""A scripted generation backend: deterministic solutions without a model.

For a question "What is N?" it writes: a text step, `print(N)`, then (after the pipeline executed
the code) a boxed answer that is right or wrong depending on the request's seed and temperature.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from scdpo.config import fill_defaults
from scdpo.generation.backends import Completion, Request
from scdpo.labels import Rubric
from scdpo.sampling import SamplingSettings
from scdpo.solution import ASSISTANT, END_OF_BLOCK, END_OF_MESSAGE, NoiseLimits
from scdpo.step_control import SCHEDULE_PRESETS, StepControlSettings

RUBRIC = Rubric(system="", noise=NoiseLimits())
SCHEMA = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "config" / "schema.yaml").read_text()
)


def source(block: dict) -> dict:
    """A problem source block with the schema's defaults filled in, as the workflow passes it."""
    return fill_defaults(block, SCHEMA["$defs"]["problem_source"], SCHEMA)


def sampling_settings(**overrides) -> SamplingSettings:
    """Sampling settings of the tests: the paper's values unless overridden."""
    values = {
        "temperature": 1.0,
        "max_samples": 100,
        "round_size": 4,
        "rubric": RUBRIC,
        "min_preferred": 1,
        "min_dispreferred": 1,
        "near_duplicate_chars": 0,
    }
    return SamplingSettings(**values | overrides)


def step_control_settings(**overrides) -> StepControlSettings:
    values = {
        "schedule": SCHEDULE_PRESETS["paper"],
        "max_tries": 8,
        "max_pairs": 2,
        "seed": 0,
        "rubric": RUBRIC,
    }
    return StepControlSettings(**values | overrides)


class ScriptedBackend:
    def __init__(self, wrong_when=lambda request: request.seed % 3 == 0) -> None:
        self.wrong_when = wrong_when
        self.calls = 0
        self.batches: list[int] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, requests: list[Request], max_new_tokens: int) -> list[Completion]:
        self.calls += len(requests)
        self.batches.append(len(requests))
        return [self._one(r) for r in requests]

    def _one(self, request: Request) -> Completion:
        answer = int(re.search(r"What is (\d+)\?", request.prompt).group(1))
        done = request.prompt.split(ASSISTANT, 1)[1].count(END_OF_BLOCK)
        if done == 0:
            return Completion("<|text|>Compute it.", END_OF_BLOCK, 3)
        if done == 1:
            return Completion(f"<|code|>print({answer})", END_OF_BLOCK, 3)
        if done == 3:
            value = answer + 1 if self.wrong_when(request) else answer
            return Completion(f"<|text|>So \\boxed{{{value}}}.", END_OF_BLOCK, 3)
        return Completion("", END_OF_MESSAGE, 1)


def questions(n: int) -> list[dict]:
    return [
        {"id": f"q{i}", "question": f"What is {i + 2}?", "answer": str(i + 2)} for i in range(n)
    ]
