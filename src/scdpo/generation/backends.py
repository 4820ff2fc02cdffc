"""Generation backends: "continue these partial solutions by one block".

Every engine takes `Request(prompt, temperature, seed)` and returns `Completion(text, stop,
tokens)`: the next block, up to `<|endofblock|>` or `<|endofmessage|>` (not included), or up to
`max_new_tokens`. Each request carries its own temperature and seed, so a sample does not depend
on which other requests shared its batch.

Two interfaces (see docs/generation.md):
- rounds: `generate(requests, max_new_tokens) -> completions`, one batched call (`VLLMBackend`,
  test fakes);
- streaming: `add(key, request, max_new_tokens)` and `step() -> [(key, completion)]`, one decoding
  step at a time, so the frontier loop refills a row the moment its block ends
  (`TransformersBackend`, which also offers `generate`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    prompt: str
    temperature: float  # 0 = greedy
    seed: int


@dataclass(frozen=True)
class Completion:
    text: str  # the new block, without its stop marker
    stop: str | None  # END_OF_BLOCK, END_OF_MESSAGE, or None when max_new_tokens ran out
    tokens: int


class Backend(Protocol):
    def generate(self, requests: list[Request], max_new_tokens: int) -> list[Completion]: ...

    def count_tokens(self, text: str) -> int: ...


def make_backend(spec: dict, model_path: str) -> Backend:
    """The `generation.backend` block, defaults filled in (config/schema.yaml) -> an engine."""
    started = time.perf_counter()
    if spec["engine"] == "vllm":
        from scdpo.generation.vllm_engine import VLLMBackend, VLLMStreamingBackend

        engine = VLLMStreamingBackend if spec["streaming"] else VLLMBackend
        backend: Backend = engine(
            model_path,
            spec["tensor_parallel_size"],
            spec["gpu_memory_utilization"],
            spec.get("max_model_len"),  # optional: the model's own length
        )
    else:
        import torch

        from scdpo.generation.transformers_engine import TransformersBackend

        device = spec["device"]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        backend = TransformersBackend(
            model_path,
            device,
            spec["batch_size"],
            spec["kv_cache_mb"],
            spec["prefill_tokens"],
            spec["prefill_every"],
        )
    log.info("%s backend ready in %.1fs", spec["engine"], time.perf_counter() - started)
    return backend
