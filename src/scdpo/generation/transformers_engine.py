"""The transformers engine: streaming decoding with a prefix key/value cache (CPU or GPU)."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

import torch

from scdpo.generation.backends import Completion, Request
from scdpo.generation.encoding import PieceEncoder
from scdpo.solution import END_OF_BLOCK, END_OF_MESSAGE

log = logging.getLogger(__name__)


@dataclass
class _Row:
    """One request inside the transformers engine."""

    key: Hashable
    ids: list[int]  # the prompt's tokens
    temperature: float
    generator: torch.Generator
    max_new_tokens: int
    length: int = 0  # tokens whose keys/values are in the row's slot
    generated: list[int] = field(default_factory=list)
    found: tuple | None = None  # prefix-cache lookup: (entry or None, tokens matched)
    # The prompt but its last token: what must be in the slot before decoding starts.
    prefix: tuple[int, ...] = ()

    def next_input(self) -> int:
        return self.generated[-1] if self.generated else self.ids[-1]


def _kv():
    """The key/value machinery (imports transformers: only when the engine is made)."""
    from scdpo.generation import kv

    return kv


class TransformersBackend:
    """Hugging Face transformers as a streaming engine with a prefix cache.

    `add(key, request, max_new_tokens)` queues a request; each `step()` admits queued requests
    into free slots of a fixed-size batch, decodes one token for every row, and returns the rows
    whose block ended, in slot order. So a row that stops early frees its slot for the next
    request at once (continuous batching) instead of idling until the round's slowest row ends.

    Admission takes each prompt's longest prefix from the prefix cache (the previous call of the
    same solution, or the shared prompt of the question's other samples) and encodes only the
    rest; identical prompts are encoded once. Rows sit left-aligned in preallocated key/value
    tensors and write each new token in place. Each row samples with its own seeded generator
    (Gumbel-max on its own logits), so its tokens do not depend on which rows shared the batch,
    up to floating-point rounding; the admission order, and so the batch, depends only on the
    order of `add` calls, so a run is reproducible.

    `generate` (the round interface) is `add` for every request, then `step` until all are done.
    """

    def __init__(
        self,
        model_path: str,
        device: str = "cpu",
        batch_size: int = 64,
        kv_cache_mb: float = 2048,
        prefill_tokens: int = 8192,
        prefill_every: int = 4,
    ) -> None:
        from scdpo.modeling import load

        self.kv = kv = _kv()
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
        self.cache = kv.PrefixCache(max(1, int(kv_cache_mb * 2**20 / per_token)))
        self.encoder = PieceEncoder(self.tokenizer)
        self.pending: deque[_Row] = deque()
        self.rows: list[_Row] = []  # row i lives in slot i
        self.slab = None  # a transformers Cache of RowSlabLayers, one slot per row
        self.capacity = 0
        self.prefill_computed = 0  # prompt tokens encoded by the model
        self.prefill_reused = 0  # prompt tokens taken from the prefix cache
        self.prefill_every = prefill_every
        self.steps = 0

    @torch.no_grad()
    def _kv_shapes(self) -> list[tuple[int, int, torch.dtype]]:
        """(heads, dim, dtype) of each layer's keys, read off a one-token forward."""
        from transformers.cache_utils import DynamicCache

        probe = DynamicCache()
        pad = torch.tensor([[self.pad_id]], device=self.device)
        self.model(input_ids=pad, cache=probe, use_cache=True)
        return [
            (layer.keys.shape[1], layer.keys.shape[3], layer.keys.dtype) for layer in probe.layers
        ]

    def reset(self) -> None:
        """Forget cached prefixes and counters: the frontier loop calls this at the start of every
        run, so a run's results never depend on what an earlier run left behind."""
        if self.pending or self.rows:
            raise RuntimeError("reset() while requests are in flight")
        self.cache.clear()
        self.encoder.clear()
        # The slab is kept: columns beyond a row's length are never attended to.
        self.prefill_computed = self.prefill_reused = self.steps = 0

    def count_tokens(self, text: str) -> int:
        return len(self.encoder.encode(text))

    # --- the round interface --------------------------------------------------------------------

    def generate(self, requests: list[Request], max_new_tokens: int) -> list[Completion]:
        if self.pending or self.rows:
            raise RuntimeError("generate() while streamed requests are in flight")
        for index, request in enumerate(requests):
            self.add(index, request, max_new_tokens)
        results: dict[Hashable, Completion] = {}
        while len(results) < len(requests):
            results.update(self.step())
        return [results[index] for index in range(len(requests))]

    # --- the streaming interface ----------------------------------------------------------------

    def add(self, key: Hashable, request: Request, max_new_tokens: int) -> None:
        ids = self.encoder.take(request.prompt)
        if not ids:
            raise ValueError("empty prompt")
        generator = torch.Generator(device=self.device)
        generator.manual_seed(request.seed)
        row = _Row(key, ids, request.temperature, generator, max_new_tokens)
        row.prefix = tuple(ids[:-1])
        self.pending.append(row)

    @property
    def in_flight(self) -> int:
        return len(self.pending) + len(self.rows)

    @torch.inference_mode()
    def step(self) -> list[tuple[Hashable, Completion]]:
        """Admit what fits, decode one token for every row, return the rows that ended."""
        self._admit()
        if not self.rows:
            return []
        lengths = torch.tensor([row.length for row in self.rows])
        width = int(lengths.max()) + 1
        for layer in self.slab.layers:
            layer.point(0, lengths.to(self.device), width)
        allowed = torch.arange(width)[None, :] <= lengths[:, None]
        logits = self.model(
            input_ids=torch.tensor([[row.next_input()] for row in self.rows], device=self.device),
            position_ids=lengths[:, None].to(self.device),
            attention_mask=self._mask(allowed[:, None, None, :]),
            cache=self.slab,
            use_cache=True,
        ).logits[:, -1]
        temperatures = torch.tensor([row.temperature for row in self.rows], dtype=torch.float32)
        tokens = self._sample(logits, temperatures, [row.generator for row in self.rows])
        self.steps += 1
        finished, ended = [], []
        for slot, (row, token) in enumerate(zip(self.rows, tokens.tolist(), strict=True)):
            row.length += 1
            row.generated.append(token)
            stop = self.stop_ids.get(token)
            if stop is None and token != self.pad_id and len(row.generated) < row.max_new_tokens:
                continue
            finished.append((row.key, self._completion(row.generated, stop)))
            ended.append(slot)
            if stop == END_OF_BLOCK:  # the solution goes on: keep its state for its next call
                tokens_held = (row.ids + row.generated)[: row.length]
                self.cache.insert(tokens_held, self._slot_kv(slot, row.length))
        self._release(ended)
        return finished

    # --- admission ---------------------------------------------------------------------------

    def _admit(self) -> None:
        """Move queued requests into free slots with their prompts' keys/values in place.

        Each prompt's longest cached prefix is copied into its slot and only the rest is encoded,
        in the slot itself. A prompt that another admitted row also has (the samples of one
        question start from the same prompt) is encoded once and copied.
        """
        free = self.batch_size - len(self.rows)
        if not self.pending or free <= 0:
            return
        # A forward that only encodes a few short prompt tails costs nearly as much as a full
        # one: unless the batch would otherwise idle, rows that need encoding wait for the next
        # `prefill_every`-th step and go in together. Rows fully cached join at once.
        encode_now = not self.rows or self.steps % self.prefill_every == 0
        admitted, deferred = [], []
        found: dict[tuple[int, ...], tuple] = {}
        while self.pending and len(admitted) < free:
            row = self.pending.popleft()
            key = row.prefix
            if key not in found:
                # A waiting row keeps its lookup; one still short is looked up again when it
                # is about to be encoded (a batch-mate may have encoded the same prompt since).
                if row.found is None or (encode_now and row.found[1] < len(key)):
                    row.found = self.cache.lookup(row.ids, len(key))
                found[key] = row.found
            if encode_now or found[key][1] == len(key):
                admitted.append(row)
            else:
                deferred.append(row)
        self.pending.extendleft(reversed(deferred))
        if not admitted:
            return
        # Slot order: the rows to encode first (one per distinct prompt), then the rest.
        first_of: dict[tuple[int, ...], _Row] = {}
        for row in admitted:
            first_of.setdefault(row.prefix, row)
        leaders = [key for key in first_of if found[key][1] < len(key)]
        leaders.sort(key=lambda key: len(key) - found[key][1])  # similar widths side by side
        encode = [first_of[key] for key in leaders]
        chosen = {id(row) for row in encode}
        order = encode + [row for row in admitted if id(row) not in chosen]
        base = len(self.rows)
        widest = max(len(row.ids) for row in admitted)
        self._ensure_capacity(
            max(
                [widest + row.max_new_tokens for row in admitted]
                + [row.length + row.max_new_tokens for row in self.rows]
            )
        )
        for row in order:
            entry, length = found[row.prefix]
            self.prefill_reused += length
            if length:
                slot = len(self.rows)
                for layer, (keys, values) in zip(self.slab.layers, entry.kv, strict=True):
                    layer.slab_keys[slot, :, :length] = keys[:, :length]
                    layer.slab_values[slot, :, :length] = values[:, :length]
            row.length = length
            self.rows.append(row)
        # Encode the leaders' missing tokens, in groups of similar width within a token budget.
        group_start = base
        for end in range(base + 1, base + len(encode) + 1):
            new_first = len(self.rows[group_start].ids) - 1 - self.rows[group_start].length
            if end < base + len(encode):
                new = len(self.rows[end].ids) - 1 - self.rows[end].length
                fits = (end + 1 - group_start) * new <= self.prefill_tokens
                if fits and new <= 2 * new_first + 16:
                    continue
            self._prefill(group_start, end)
            group_start = end
        leader_slot = {self.rows[slot].prefix: slot for slot in range(base, base + len(encode))}
        for slot in range(base + len(encode), len(self.rows)):
            row = self.rows[slot]
            source = leader_slot.get(row.prefix)
            if source is not None:  # same prompt as a row just encoded: copy its keys/values
                length = len(row.ids) - 1
                for layer in self.slab.layers:
                    layer.slab_keys[slot, :, :length] = layer.slab_keys[source, :, :length]
                    layer.slab_values[slot, :, :length] = layer.slab_values[source, :, :length]
                self.prefill_reused += length - row.length
                row.length = length

    @torch.inference_mode()
    def _prefill(self, first: int, end: int) -> None:
        """Encode rows first..end-1 up to their prompt's last token, in their own slots."""
        rows = self.rows[first:end]
        cached = torch.tensor([row.length for row in rows])
        new = [len(row.ids) - 1 - row.length for row in rows]
        width = max(new)
        self.prefill_computed += sum(new)
        self._ensure_capacity(int(cached.max()) + width)
        inputs = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for index, row in enumerate(rows):
            inputs[index, : new[index]] = torch.tensor(row.ids[row.length : len(row.ids) - 1])
        steps = torch.arange(width)
        columns = torch.arange(int(cached.max()) + width)
        # Key column c for query j of row i: the cached prefix (c < cached[i]), or the row's own
        # new tokens up to j. Padded queries (j >= new[i]) still see real tokens: no empty row.
        offset = columns[None, None, :] - cached[:, None, None]
        allowed = (offset < 0) | (
            (offset <= steps[None, :, None]) & (offset < torch.tensor(new)[:, None, None])
        )
        for layer in self.slab.layers:
            layer.point(first, cached.to(self.device), len(columns))
        self.model(
            input_ids=inputs.to(self.device),
            position_ids=(cached[:, None] + steps[None, :]).to(self.device),
            attention_mask=self._mask(allowed[:, None]),
            cache=self.slab,
            use_cache=True,
            logits_to_keep=1,
        )
        for index, row in enumerate(rows):
            row.length = len(row.ids) - 1
            if new[index] >= self.kv.BLOCK:  # a new prompt: later samples and retries start from it
                self.cache.insert(row.ids[:-1], self._slot_kv(first + index, row.length))

    def _ensure_capacity(self, needed: int) -> None:
        if self.slab is not None and needed <= self.capacity:
            return
        capacity = -(-max(needed, int(self.capacity * 1.5), 256) // 64) * 64
        old = self.slab

        def zeros(heads: int, dim: int, dtype: torch.dtype) -> torch.Tensor:
            size = (self.batch_size, heads, capacity, dim)
            return torch.zeros(size, dtype=dtype, device=self.device)

        self.slab = self.kv.Cache(
            layers=[self.kv.RowSlabLayer(zeros(*shape), zeros(*shape)) for shape in self.shapes]
        )
        if old is not None:
            for new_layer, old_layer in zip(self.slab.layers, old.layers, strict=True):
                new_layer.slab_keys[:, :, : self.capacity] = old_layer.slab_keys
                new_layer.slab_values[:, :, : self.capacity] = old_layer.slab_values
        self.capacity = capacity

    def _release(self, ended: list[int]) -> None:
        """Drop ended rows; the last rows move into the holes so live rows stay in 0..n-1."""
        if not ended:
            return
        gone = set(ended)
        keep = len(self.rows) - len(ended)
        holes = [slot for slot in ended if slot < keep]
        movers = [slot for slot in range(keep, len(self.rows)) if slot not in gone]
        for hole, mover in zip(holes, movers, strict=True):
            length = self.rows[mover].length
            for layer in self.slab.layers:
                layer.slab_keys[hole, :, :length] = layer.slab_keys[mover, :, :length]
                layer.slab_values[hole, :, :length] = layer.slab_values[mover, :, :length]
            self.rows[hole] = self.rows[mover]
        del self.rows[keep:]

    def _slot_kv(self, slot: int, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [
            (layer.slab_keys[slot, :, :length].clone(), layer.slab_values[slot, :, :length].clone())
            for layer in self.slab.layers
        ]

    # --- helpers ----------------------------------------------------------------------------------

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
