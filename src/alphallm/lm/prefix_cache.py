"""Prefix KV reuse across calls: a tree node's text is never re-encoded for its children.

After a sampling call, the KV cache of every row (prompt + generated tokens) is kept, keyed by its
token ids. A later call whose state extends a stored key starts from that KV and only encodes the
new tokens: expanding a node whose option was just sampled costs one prefill token, not the whole
prompt. Entries are evicted least-recently-used under a byte budget.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["PrefixStore", "stack_entries"]

_MOD = (1 << 61) - 1
_BASE = 1_000_003


def _prefix_hashes(ids: Sequence[int]) -> list[int]:
    """Rolling hashes of every prefix: ``out[i]`` is the hash of ``ids[: i + 1]``."""
    out, h = [], 0
    for token in ids:
        h = (h * _BASE + token + 1) % _MOD
        out.append(h)
    return out


@dataclass
class _Entry:
    ids: tuple[int, ...]
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each (H, T, D)
    nbytes: int


class PrefixStore:
    """An LRU map from token-id prefixes to their per-layer KV tensors."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.lookups = 0
        self._entries: OrderedDict[tuple[int, int], _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def longest_prefix(self, ids: Sequence[int], *, max_len: int) -> _Entry | None:
        """The longest stored entry that is a prefix of ``ids`` and no longer than ``max_len``."""
        self.lookups += 1
        if not self._entries:
            return None
        hashes = _prefix_hashes(ids[:max_len])
        for length in range(len(hashes), 0, -1):
            entry = self._entries.get((length, hashes[length - 1]))
            if entry is not None and entry.ids == tuple(ids[:length]):
                self._entries.move_to_end((length, hashes[length - 1]))
                self.hits += 1
                return entry
        return None

    def put(self, ids: Sequence[int], layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        if not ids or self.max_bytes <= 0:
            return
        key = (len(ids), _prefix_hashes(ids)[-1])
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        if nbytes > self.max_bytes:
            return
        self._entries[key] = _Entry(tuple(ids), layers, nbytes)
        self.bytes += nbytes
        while self.bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.bytes -= old.nbytes


def stack_entries(entries: Sequence[_Entry | None], width: int) -> Any:
    """A batched ``DynamicCache`` from stored entries (None: a row with none), each row's KV
    left-padded to ``width`` positions: the start of a prefill that reuses them."""
    from transformers import DynamicCache

    reference = next(e for e in entries if e is not None).layers
    cache = DynamicCache()
    for layer, (k_ref, v_ref) in enumerate(reference):
        keys = k_ref.new_zeros((len(entries), k_ref.shape[0], width, k_ref.shape[2]))
        values = v_ref.new_zeros((len(entries), v_ref.shape[0], width, v_ref.shape[2]))
        for row, entry in enumerate(entries):
            if entry is not None:
                k, v = entry.layers[layer]
                keys[row, :, width - k.shape[1] :] = k
                values[row, :, width - v.shape[1] :] = v
        cache.update(keys, values, layer)
    return cache
