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
from transformers.cache_utils import DynamicCache

from scdpo.generation.kv import Entry, PrefixCache, slab_cache
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


class TransformersBackend:
    """Hugging Face transformers, batched, with key/value state kept between calls.

    Each call: tokenise the prompts; find each one's longest prefix in the prefix cache; encode
    the rest (identical prompts once: the samples of one question share their prompt); then decode
    all rows together, one token per step, writing keys/values in place and dropping finished rows
    as the batch thins. Each row samples with its own seeded generator (Gumbel-max on its own
    logits), so its tokens do not depend on which other rows shared the batch.
    """

    def __init__(
        self,
        model_path: str,
        device: str = "cpu",
        batch_size: int = 64,
        kv_cache_mb: float = 2048,
        prefill_tokens: int = 8192,
    ) -> None:
        from scdpo.modeling import load

        self.model, self.tokenizer = load(model_path, device)
        self.model.eval()
        if self.model.config._attn_implementation not in ("sdpa", "eager"):
            self.model.set_attn_implementation("sdpa")  # the masks below are dense
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.prefill_tokens = prefill_tokens
        self.stop_ids = {
            self.tokenizer.convert_tokens_to_ids(END_OF_BLOCK): END_OF_BLOCK,
            self.tokenizer.convert_tokens_to_ids(END_OF_MESSAGE): END_OF_MESSAGE,
        }
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id
        self.shapes = self._kv_shapes()
        per_token = sum(2 * heads * dim * dtype.itemsize for heads, dim, dtype in self.shapes)
        self.cache = PrefixCache(max(1, int(kv_cache_mb * 2**20 / per_token)))
        self._encoded: dict[str, list[int]] = {}
        self.prefill_computed = 0  # prompt tokens encoded by the model
        self.prefill_reused = 0  # prompt tokens taken from the prefix cache

    @torch.no_grad()
    def _kv_shapes(self) -> list[tuple[int, int, torch.dtype]]:
        """(heads, dim, dtype) of each layer's keys, read off a one-token forward."""
        probe = DynamicCache()
        self.model(input_ids=torch.tensor([[self.pad_id]], device=self.device), cache=probe,
                   use_cache=True)
        return [(layer.keys.shape[1], layer.keys.shape[3], layer.keys.dtype) for layer in probe.layers]

    def reset(self) -> None:
        """Forget cached prefixes: the frontier loop calls this at the start of every run, so a
        run's results never depend on what an earlier run left behind."""
        self.cache.clear()
        self._encoded.clear()

    def _encode(self, text: str) -> list[int]:
        ids = self._encoded.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            self._encoded[text] = ids
        return ids

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    def generate(self, requests: list[Request], max_new_tokens: int) -> list[Completion]:
        ids = [self._encode(r.prompt) for r in requests]
        self._encoded.clear()
        if any(not row for row in ids):
            raise ValueError("empty prompt")
        # Similar lengths side by side waste less padding; the order is restored below.
        order = sorted(range(len(requests)), key=lambda i: len(ids[i]))
        restored: list[Completion] = [None] * len(requests)  # type: ignore[list-item]
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            completions = self._generate_batch(
                [requests[i] for i in batch], [ids[i] for i in batch], max_new_tokens
            )
            for index, completion in zip(batch, completions, strict=True):
                restored[index] = completion
        return restored

    # --- prefill: the prompt tokens not in the cache, each distinct prompt once ------------------

    def _prefixes(self, ids: list[list[int]]) -> list[Entry | None]:
        """Per row, a cache entry holding all of its prompt but the last token (None: empty)."""
        wanted: dict[tuple[int, ...], tuple[Entry | None, int]] = {}
        for row in ids:
            key = tuple(row[:-1])
            if key not in wanted:
                wanted[key] = self.cache.lookup(row, len(row) - 1)
        todo = [key for key, (_, length) in wanted.items() if length < len(key)]
        self.prefill_reused += sum(length for _, length in wanted.values())
        todo.sort(key=lambda key: len(key) - wanted[key][1])
        group: list[tuple[int, ...]] = []
        for key in todo:
            new = len(key) - wanted[key][1]
            if group and (len(group) + 1) * max(new, len(group[-1]) - wanted[group[-1]][1]) > (
                self.prefill_tokens
            ):
                self._prefill(group, wanted)
                group = []
            group.append(key)
        if group:
            self._prefill(group, wanted)
        return [wanted[tuple(row[:-1])][0] if len(row) > 1 else None for row in ids]

    @torch.no_grad()
    def _prefill(self, keys: list[tuple[int, ...]], wanted: dict) -> None:
        cached = [wanted[key][1] for key in keys]
        new = [len(key) - length for key, length in zip(keys, cached, strict=True)]
        self.prefill_computed += sum(new)
        past, width = max(cached), max(new)
        cache, valid = self._slab([wanted[key][0] for key in keys], cached, past + width)
        inputs = torch.full((len(keys), width), self.pad_id, dtype=torch.long)
        positions = torch.zeros((len(keys), width), dtype=torch.long)
        for row, (key, length) in enumerate(zip(keys, cached, strict=True)):
            inputs[row, : len(key) - length] = torch.tensor(key[length:])
            positions[row] = torch.arange(length, length + width)
        # Keys: the row's cached prefix, then its new tokens up to the query (right padding is
        # never attended to; padded queries see the real tokens, so no row is all-masked).
        steps = torch.arange(width)
        causal = steps[None, :, None] >= steps[None, None, :]
        real = steps[None, None, :] < torch.tensor(new)[:, None, None]
        mask = torch.cat(
            [valid[:, None, :past].expand(-1, width, -1), causal & real], dim=2
        )[:, None]
        self.model(
            input_ids=inputs.to(self.device),
            position_ids=positions.to(self.device),
            attention_mask=self._mask(mask),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        for row, (key, length) in enumerate(zip(keys, cached, strict=True)):
            kv = self._row_kv(cache, row, past - length, past + len(key) - length)
            wanted[key] = (self.cache.insert(list(key), kv), len(key))

    # --- decode: every row one token per step -------------------------------------------------

    @torch.no_grad()
    def _generate_batch(
        self, requests: list[Request], ids: list[list[int]], max_new_tokens: int
    ) -> list[Completion]:
        entries = self._prefixes(ids)
        cached = [len(row) - 1 for row in ids]
        past = max(cached)
        cache, valid = self._slab(entries, cached, past + max_new_tokens)
        valid[:, past:] = True
        rows = torch.arange(len(requests))  # slab row -> request
        inputs = torch.tensor([[row[-1]] for row in ids])
        positions = torch.tensor([[length] for length in cached])
        temperatures = torch.tensor([r.temperature for r in requests], dtype=torch.float32)
        generators = []
        for request in requests:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(request.seed)
            generators.append(generator)
        generated: list[list[int]] = [[] for _ in requests]
        completions: list[Completion | None] = [None] * len(requests)
        alive = [True] * len(requests)  # per slab row
        for step in range(max_new_tokens):
            logits = self.model(
                input_ids=inputs.to(self.device),
                position_ids=positions.to(self.device),
                attention_mask=self._mask(valid[:, None, None, : past + step + 1]),
                cache=cache,
                use_cache=True,
            ).logits[:, -1]
            tokens = self._sample(logits, temperatures, generators)
            for slot, token in enumerate(tokens.tolist()):
                if not alive[slot]:
                    continue
                index = int(rows[slot])
                out = generated[index]
                out.append(token)
                stop = self.stop_ids.get(token)
                if stop is None and token != self.pad_id and step + 1 < max_new_tokens:
                    continue
                alive[slot] = False
                completions[index] = self._completion(out, stop)
                if stop == END_OF_BLOCK:  # the solution goes on: keep its state for the next call
                    start = past - cached[index]
                    kv = self._row_kv(cache, slot, start, past + step + 1)
                    self.cache.insert(ids[index] + out[:-1], kv)
            live = [slot for slot, on in enumerate(alive) if on]
            if not live:
                break
            inputs, positions = tokens[:, None], positions + 1
            if len(live) <= len(alive) // 2:  # compact: finished rows cost nothing from now on
                slots = torch.tensor(live)
                for layer in cache.layers:
                    layer.select(slots.to(self.device))
                rows, valid, inputs = rows[slots], valid[slots], inputs[slots]
                temperatures, positions = temperatures[slots], positions[slots]
                generators = [generators[slot] for slot in live]
                alive = [True] * len(live)
        return completions  # type: ignore[return-value]

    def _sample(self, logits: torch.Tensor, temperatures: torch.Tensor, generators) -> torch.Tensor:
        """argmax(logits / T + Gumbel noise) is a draw from softmax(logits / T); T = 0 is greedy."""
        logits = logits.float()
        noise = torch.empty_like(logits)
        for row, generator in enumerate(generators):
            torch.rand(logits.shape[1], generator=generator, device=logits.device, out=noise[row])
        gumbel = -torch.log(-torch.log(noise.clamp_min(1e-20)))
        hot = temperatures.to(logits.device)
        scores = torch.where(
            (hot > 0)[:, None], logits / hot.clamp_min(1e-6)[:, None] + gumbel, logits
        )
        return scores.argmax(dim=-1).cpu()

    # --- helpers ----------------------------------------------------------------------------------

    def _slab(self, entries: list[Entry | None], lengths: list[int], capacity: int):
        """A cache with row i's first lengths[i] cached tokens right-aligned before column
        max(lengths), and the mask of which columns hold real tokens."""
        past = max(lengths)
        cache = slab_cache(self.shapes, len(lengths), capacity, self.device)
        valid = torch.zeros((len(lengths), capacity), dtype=torch.bool)
        for row, (entry, length) in enumerate(zip(entries, lengths, strict=True)):
            if not length:
                continue
            valid[row, past - length : past] = True
            for layer, (keys, values) in zip(cache.layers, entry.kv, strict=True):
                layer.slab_keys[row, :, past - length : past] = keys[:, :length]
                layer.slab_values[row, :, past - length : past] = values[:, :length]
        for layer in cache.layers:
            layer.length = past
            layer._views()
        return cache, valid

    @staticmethod
    def _row_kv(cache, row: int, start: int, end: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [
            (layer.slab_keys[row, :, start:end].clone(), layer.slab_values[row, :, start:end].clone())
            for layer in cache.layers
        ]

    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """[batch, 1, queries, keys] booleans -> what the attention implementation takes."""
        allowed = allowed.to(self.device)
        if self.model.config._attn_implementation == "sdpa":
            return allowed
        zero = torch.zeros((), dtype=self.model.dtype, device=self.device)
        return torch.where(allowed, zero, torch.finfo(self.model.dtype).min)

    def _completion(self, token_ids: list[int], stop: str | None) -> Completion:
        kept = token_ids[:-1] if stop is not None or token_ids[-1] == self.pad_id else token_ids
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
        backend = TransformersBackend(
            model_path,
            device,
            spec.get("batch_size", 64),
            spec.get("kv_cache_mb", 2048),
            spec.get("prefill_tokens", 8192),
        )
    log.info("%s backend ready in %.1fs", spec["engine"], time.perf_counter() - started)
    return backend
