"""Key/value state kept between generation calls, for the transformers backend.

The frontier loop calls the model once per block, and each call's prompt is the previous call's
prompt plus the block just written (and, after code, its execution). Re-encoding that whole prefix
every call would cost far more than the new tokens; vLLM avoids it with prefix caching, and this
module does the same for transformers:

- `PrefixCache`: a content-addressed store of per-sequence key/value tensors. Lookups find the
  longest stored prefix of a token sequence through chained hashes of 16-token blocks (as vLLM's
  automatic prefix caching), then extend the match token by token. An entry that is a prefix of a
  newer one is dropped (the newer one answers every lookup it would), the rest are evicted least
  recently used beyond a token budget.
- `RowSlabLayer`: a transformers cache layer over preallocated tensors, one slot per row, so
  decoding writes each new token in place instead of concatenating the whole cache every step.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer

__all__ = ["BLOCK", "Cache", "Entry", "PrefixCache", "RowSlabLayer", "block_hashes"]

BLOCK = 16


@dataclass
class Entry:
    tokens: list[int]  # the tokens whose keys/values are held
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [heads, len, dim]
    hashes: list[int]


def block_hashes(tokens: list[int], limit: int | None = None) -> list[int]:
    """Chained hashes of the full 16-token blocks of `tokens[:limit]`."""
    end = len(tokens) if limit is None else min(limit, len(tokens))
    hashes, value = [], 0
    for start in range(0, end - BLOCK + 1, BLOCK):
        value = hash((value, tuple(tokens[start : start + BLOCK])))
        hashes.append(value)
    return hashes


class PrefixCache:
    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.entries: OrderedDict[int, Entry] = OrderedDict()  # least recently used first
        self.index: dict[int, set[int]] = {}  # block hash -> ids of the entries holding that prefix
        self.tokens = 0
        self.next_id = 0

    def clear(self) -> None:
        self.entries.clear()
        self.index.clear()
        self.tokens = 0

    def lookup(self, tokens: list[int], limit: int) -> tuple[Entry | None, int]:
        """The entry sharing the longest prefix (at most `limit` tokens) with `tokens`, and the
        prefix's length."""
        candidates, blocks = set(), 0
        for position, value in enumerate(block_hashes(tokens, limit)):
            holders = self.index.get(value)
            if not holders:
                break
            candidates, blocks = holders, (position + 1) * BLOCK
        best_id, matched = None, 0
        for entry_id in sorted(candidates):  # sorted: ties go the same way every run
            entry = self.entries[entry_id]
            length, end = blocks, min(limit, len(entry.tokens))
            while length < end and entry.tokens[length] == tokens[length]:
                length += 1
            if length > matched:
                best_id, matched = entry_id, length
        if best_id is None or self.entries[best_id].tokens[:blocks] != tokens[:blocks]:
            return None, 0  # nothing, or a hash collision: compute from scratch
        self.entries.move_to_end(best_id)
        return self.entries[best_id], matched

    def insert(self, tokens: list[int], kv: list[tuple[torch.Tensor, torch.Tensor]]) -> Entry:
        entry = Entry(tokens, kv, block_hashes(tokens))
        if not entry.hashes:
            return entry  # shorter than a block: nothing could find it
        for value in entry.hashes:
            for old_id in sorted(self.index.get(value, ())):
                old = self.entries[old_id]
                # Only an entry whose last full block is here can be a prefix of the new one.
                if old.hashes[-1] != value or len(old.tokens) > len(tokens):
                    continue
                if tokens[: len(old.tokens)] == old.tokens:
                    self._drop(old_id)  # the new entry answers every lookup the old one would
        entry_id, self.next_id = self.next_id, self.next_id + 1
        for value in entry.hashes:
            self.index.setdefault(value, set()).add(entry_id)
        self.entries[entry_id] = entry
        self.tokens += len(tokens)
        while self.tokens > self.max_tokens and len(self.entries) > 1:
            self._drop(next(iter(self.entries)))
        return entry

    def _drop(self, entry_id: int) -> None:
        entry = self.entries.pop(entry_id)
        self.tokens -= len(entry.tokens)
        for value in entry.hashes:
            holders = self.index.get(value)
            if holders is not None:
                holders.discard(entry_id)
                if not holders:
                    del self.index[value]


class RowSlabLayer(DynamicLayer):
    """One layer's keys and values: rows left-aligned in preallocated [slots, heads, capacity,
    dim] tensors, each row at its own length, written in place.

    `point(first, lengths, width)` aims the next forward at slots first .. first+len(lengths)-1:
    row i writes its new tokens from column lengths[i] on, and attention reads the first `width`
    columns (the caller's mask hides each row's columns beyond its own tokens).
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.slab_keys, self.slab_values = keys, values
        self.is_initialized = True
        self.device = keys.device
        self.first, self.length = 0, 0
        self.columns: torch.Tensor | None = None

    def point(self, first: int, lengths: torch.Tensor, width: int) -> None:
        self.first, self.columns, self.length = first, lengths, width
        rows = slice(first, first + len(lengths))
        self.keys = self.slab_keys[rows, :, :width]
        self.values = self.slab_values[rows, :, :width]

    def update(self, key_states, value_states, *args, **kwargs):
        count, new = len(self.columns), key_states.shape[-2]
        rows = torch.arange(self.first, self.first + count, device=self.columns.device)
        if new == 1:
            self.slab_keys[rows, :, self.columns] = key_states[:, :, 0]
            self.slab_values[rows, :, self.columns] = value_states[:, :, 0]
        else:
            steps = torch.arange(new, device=self.columns.device)
            columns = self.columns[:, None] + steps[None, :]
            self.slab_keys[rows[:, None], :, columns] = key_states.transpose(1, 2)
            self.slab_values[rows[:, None], :, columns] = value_states.transpose(1, 2)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length
