"""d-e. Naive sampling: adaptive rounds per question until enough preferred and dispreferred
solutions exist (paper: one of each) or K were drawn; every sample graded and labelled.

Samples are recorded in the order they were drawn, never the order they finished: a round ends
before the next is drawn, and its samples are judged sorted by draw index, so the file is the
same whatever the engine, batch size, chunking or shard count, and "the first preferred sample"
(step control's chosen solution, the naive pair) means the first drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

from scdpo.generation.job import Stage
from scdpo.generation.loop import Partial
from scdpo.generation.runner import shard_slice
from scdpo.jsonl import read_jsonl
from scdpo.labels import Rubric, problem_fields, rubric_of, sample_record

# The released code's near-duplicate: as many blocks and a total length within this many
# characters of a kept sample with the same label (process_gsm8k.py: no_similar).
NEAR_DUPLICATE_CHARS = 500
# Stop rules: (min preferred, min dispreferred, near-duplicate margin in characters, 0 = none
# dropped). The paper samples until one of each; the released code until 4 right and 4 wrong
# (Mistral-7B-Ours) or 1 right and 4 wrong (InternLM2, MathCoder), dropping near-duplicates.
STOP_PRESETS = {
    "paper": (1, 1, 0),
    "released_4_4": (4, 4, NEAR_DUPLICATE_CHARS),
    "released_1_4": (1, 4, NEAR_DUPLICATE_CHARS),
}


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float
    max_samples: int  # K
    round_size: int
    rubric: Rubric
    min_preferred: int
    min_dispreferred: int
    near_duplicate_chars: int  # 0: keep near-duplicates


def stop_rule(spec: str | dict) -> tuple[int, int, int]:
    """`stop: paper | released_4_4 | released_1_4` or explicit {min_preferred, ...}."""
    if isinstance(spec, str):
        return STOP_PRESETS[spec]
    margin = spec.get("near_duplicate_chars", NEAR_DUPLICATE_CHARS)
    return spec["min_preferred"], spec["min_dispreferred"], margin * spec["drop_near_duplicates"]


def sampling_settings(params: dict) -> SamplingSettings:
    """Naive sampling as an experiment's `sampling`, `system_prompt` and `noise` blocks say."""
    sampling = params["sampling"]
    min_preferred, min_dispreferred, margin = stop_rule(sampling["stop"])
    return SamplingSettings(
        temperature=sampling["temperature"],
        max_samples=sampling["max_samples"],
        round_size=sampling["round_size"],
        rubric=rubric_of(params),
        min_preferred=min_preferred,
        min_dispreferred=min_dispreferred,
        near_duplicate_chars=margin,
    )


def _length(sample: dict) -> int:
    return sum(len(b["content"]) for b in sample["blocks"])


def near_duplicate_of(
    sample: dict, kept: list[dict], margin: int = NEAR_DUPLICATE_CHARS
) -> int | None:
    """The draw index of a kept sample with the same label that this one nearly repeats."""
    label = "preferred" if sample["preferred"] else "dispreferred"
    for other in kept:
        if (
            other[label]
            and len(other["blocks"]) == len(sample["blocks"])
            and abs(_length(other) - _length(sample)) < margin
        ):
            return other["draw"]
    return None


class SamplingTask:
    def __init__(self, problem: dict, settings: SamplingSettings) -> None:
        self.problem = problem
        self.settings = settings
        self.prompt = settings.rubric.prompt(problem["question"])
        self.samples: list[dict] = []  # judged, in draw order
        self.round: list[dict] = []  # finished samples of the round being drawn
        self.outstanding = 0
        self.drawn = 0

    def _draw(self) -> list[Partial]:
        count = min(self.settings.round_size, self.settings.max_samples - self.drawn)
        partials = [
            Partial(
                self,
                self.prompt,
                [],
                seed_key=f"sample/{self.problem['id']}/{self.drawn + i}",
                tag={"draw": self.drawn + i},
            )
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
        self.round.append({"draw": partial.tag["draw"], **sample_record(partial, verdict)})
        self.outstanding -= 1
        if self.outstanding:
            return []
        for sample in sorted(self.round, key=lambda s: s["draw"]):
            self._keep(sample)
        self.round = []
        return [] if self.done else self._draw()

    def _keep(self, sample: dict) -> None:
        """Append a judged sample; a near-duplicate keeps its record but loses its label."""
        margin = self.settings.near_duplicate_chars
        if margin and (sample["preferred"] or sample["dispreferred"]):
            original = near_duplicate_of(sample, self.samples, margin)
            if original is not None:
                sample |= {"preferred": False, "dispreferred": False, "duplicate_of": original}
        self.samples.append(sample)

    @property
    def done(self) -> bool:
        preferred = sum(s["preferred"] for s in self.samples)
        dispreferred = sum(s["dispreferred"] for s in self.samples)
        enough = (
            preferred >= self.settings.min_preferred
            and dispreferred >= self.settings.min_dispreferred
        )
        return enough or self.drawn >= self.settings.max_samples

    def record(self) -> dict:
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
