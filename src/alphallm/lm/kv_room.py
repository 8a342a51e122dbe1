"""A KV cache with room to decode into.

transformers' ``DynamicLayer`` appends a decoded token's keys and values with ``torch.cat``, which copies
the layer's whole cache at every step: the cost of a step grows with the context, and a search decodes
thousands of short options after long prompts. In a 150-puzzle game24 search (the demo's settings) those
copies were 8.5 s of its 48 s of decoding. ``make_room`` gives each layer buffers with room for more
positions (``ROOM`` at a time); a step writes its token in place, and the layer's ``keys`` and ``values``
are views of the filled part, so everything that reads them (attention, the prefix store) sees the same
values as before.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicLayer

__all__ = ["ROOM", "RoomyLayer", "make_room"]

# Positions added at a time: enough that a step rarely grows the buffers, few enough that a row
# dropped from the batch (which copies the buffers) does not copy much empty room.
ROOM = 32


def make_room(cache: Any, room: int) -> None:
    """Gives every filled plain ``DynamicLayer`` of ``cache`` room for ``room`` more positions, in place.
    Other layers (sliding windows, quantized, static) keep their own update, and a cache without layers
    (a model's own legacy tuples) is left as it is."""
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list):
        return
    cache.layers = [RoomyLayer(layer, room) if _filled_dynamic(layer) else layer for layer in layers]


def _filled_dynamic(layer: Any) -> bool:
    keys = getattr(layer, "keys", None)  # empty (a 1-D tensor or None) until the first update
    return type(layer) is DynamicLayer and isinstance(keys, torch.Tensor) and keys.dim() == 4


class RoomyLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values (B, H, T, D) are the first T positions of buffers with
    room for more: ``update`` writes into the room, and grows the buffers by ``room`` when it runs out.
    The decode loop's caches are never offloaded, so offloading (which would copy the views away from
    their buffers) is not supported."""

    def __init__(self, layer: DynamicLayer, room: int) -> None:
        super().__init__()
        self.device = layer.device
        self.is_initialized = True
        self.room = max(1, room)
        assert layer.keys is not None and layer.values is not None  # a filled layer (make_room)
        self._length = layer.get_seq_length()
        self._key_buffer = self._with_room(layer.keys)
        self._value_buffer = self._with_room(layer.values)
        self._show()

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        added = key_states.shape[-2]
        if self._length + added > self._key_buffer.shape[-2]:
            self._key_buffer = self._with_room(self._key_buffer[..., : self._length, :], added)
            self._value_buffer = self._with_room(self._value_buffer[..., : self._length, :], added)
        self._key_buffer[..., self._length : self._length + added, :] = key_states
        self._value_buffer[..., self._length : self._length + added, :] = value_states
        self._length += added
        return self._show()

    def get_seq_length(self, *args: Any) -> int:  # older transformers pass a layer index or position
        return self._length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._key_buffer = self._key_buffer[indices, ...]
        self._value_buffer = self._value_buffer[indices, ...]
        self._show()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx.to(self.device))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._key_buffer = self._key_buffer.repeat_interleave(repeats, dim=0)
        self._value_buffer = self._value_buffer.repeat_interleave(repeats, dim=0)
        self._show()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:  # as DynamicLayer: only a negative count (from the end) is taken
            raise ValueError(f"crop takes a negative number of tokens to remove, not {tokens_to_remove}")
        self._length = max(0, self._length + tokens_to_remove)
        self._show()

    def reset(self) -> None:
        self._length = 0
        self._show()

    def _with_room(self, filled: torch.Tensor, needed: int = 0) -> torch.Tensor:
        """A buffer holding ``filled`` (B, H, T, D) with room for ``needed`` + ``room`` more positions."""
        batch, heads, length, dim = filled.shape
        buffer = filled.new_empty((batch, heads, length + needed + self.room, dim))
        buffer[..., :length, :] = filled
        return buffer

    def _show(self) -> tuple[torch.Tensor, torch.Tensor]:
        keys = self._key_buffer[..., : self._length, :]
        values = self._value_buffer[..., : self._length, :]
        self.keys, self.values = keys, values
        return keys, values
