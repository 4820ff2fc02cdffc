"""Generation backends: "continue these partial solutions by one block".

One interface, two engines: vLLM on GPU (prefix caching, tensor parallelism) and transformers on
CPU or small GPUs (batched, left-padded, KV cache). Each request carries its own temperature and
seed, so a sample does not depend on which other requests shared its batch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

import torch

from scdpo.solution import END_OF_BLOCK, END_OF_MESSAGE

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


class _PerRowSampler:
    """A logits processor that turns greedy search into per-row seeded sampling.

    argmax(logits / T + Gumbel noise) is a sample from softmax(logits / T); drawing the noise from
    one generator per row makes each row's sample independent of its batch-mates.
    """

    def __init__(self, requests: list[Request], device: torch.device) -> None:
        self.temperatures = torch.tensor([r.temperature for r in requests], device=device)
        self.generators = []
        for request in requests:
            generator = torch.Generator(device=device)
            generator.manual_seed(request.seed)
            self.generators.append(generator)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float()
        out = scores.clone()
        for row, generator in enumerate(self.generators):
            temperature = float(self.temperatures[row])
            if temperature <= 0:
                continue
            uniform = torch.rand(scores.shape[1], generator=generator, device=scores.device)
            gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)))
            out[row] = scores[row] / temperature + gumbel
        return out


class TransformersBackend:
    """Hugging Face transformers: batched, left-padded generation with the KV cache."""

    def __init__(self, model_path: str, device: str = "cpu", batch_size: int = 64) -> None:
        from scdpo.modeling import load

        self.model, self.tokenizer = load(model_path, device)
        self.model.eval()
        self.tokenizer.padding_side = "left"
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.stop_ids = {
            self.tokenizer.convert_tokens_to_ids(END_OF_BLOCK): END_OF_BLOCK,
            self.tokenizer.convert_tokens_to_ids(END_OF_MESSAGE): END_OF_MESSAGE,
        }

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def generate(self, requests: list[Request], max_new_tokens: int) -> list[Completion]:
        completions: list[Completion] = []
        # Similar lengths side by side waste less padding; the order is restored below.
        order = sorted(range(len(requests)), key=lambda i: len(requests[i].prompt))
        for start in range(0, len(order), self.batch_size):
            batch = [requests[i] for i in order[start : start + self.batch_size]]
            completions += self._generate_batch(batch, max_new_tokens)
        restored: list[Completion] = [None] * len(requests)  # type: ignore[list-item]
        for position, index in enumerate(order):
            restored[index] = completions[position]
        return restored

    @torch.no_grad()
    def _generate_batch(self, requests: list[Request], max_new_tokens: int) -> list[Completion]:
        from transformers import LogitsProcessorList

        encoded = self.tokenizer(
            [r.prompt for r in requests],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(self.device)
        output = self.model.generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            logits_processor=LogitsProcessorList([_PerRowSampler(requests, self.device)]),
            eos_token_id=list(self.stop_ids),
            pad_token_id=self.tokenizer.pad_token_id,
            temperature=None,
            top_p=None,
            top_k=None,
        )
        new_tokens = output[:, encoded.input_ids.shape[1] :].tolist()
        return [self._completion(row) for row in new_tokens]

    def _completion(self, token_ids: list[int]) -> Completion:
        stop = None
        kept = []
        for token_id in token_ids:
            if token_id in self.stop_ids:
                stop = self.stop_ids[token_id]
                break
            if token_id == self.tokenizer.pad_token_id:
                break
            kept.append(token_id)
        text = self.tokenizer.decode(kept, skip_special_tokens=False)
        return Completion(text=text, stop=stop, tokens=len(kept) + (stop is not None))


class VLLMBackend:
    """vLLM's offline engine; prefix caching shares the long common prefixes of continuations."""

    def __init__(
        self,
        model_path: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
    ) -> None:
        from vllm import LLM

        self.llm = LLM(
            model=model_path,
            tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=True,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.stop_ids = {
            self.tokenizer.convert_tokens_to_ids(END_OF_BLOCK): END_OF_BLOCK,
            self.tokenizer.convert_tokens_to_ids(END_OF_MESSAGE): END_OF_MESSAGE,
        }

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def generate(self, requests: list[Request], max_new_tokens: int) -> list[Completion]:
        from vllm import SamplingParams, TokensPrompt

        params = [
            SamplingParams(
                temperature=r.temperature,
                seed=r.seed,
                max_tokens=max_new_tokens,
                stop_token_ids=list(self.stop_ids),
                skip_special_tokens=False,
            )
            for r in requests
        ]
        prompts = [
            TokensPrompt(
                prompt_token_ids=self.tokenizer(r.prompt, add_special_tokens=False).input_ids
            )
            for r in requests
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        completions = []
        for output in outputs:
            sample = output.outputs[0]
            stop = self.stop_ids.get(sample.stop_reason) if sample.finish_reason == "stop" else None
            completions.append(Completion(sample.text, stop, len(sample.token_ids)))
        return completions


def make_backend(spec: dict, model_path: str) -> Backend:
    """The `generation.backend` config block -> an engine."""
    started = time.perf_counter()
    if spec["engine"] == "vllm":
        backend: Backend = VLLMBackend(
            model_path,
            spec.get("tensor_parallel_size", 1),
            spec.get("gpu_memory_utilization", 0.9),
            spec.get("max_model_len"),
        )
    else:
        device = spec.get("device", "cpu")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        backend = TransformersBackend(model_path, device, spec.get("batch_size", 64))
    log.info("%s backend ready in %.1fs", spec["engine"], time.perf_counter() - started)
    return backend
