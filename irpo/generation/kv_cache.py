"""A KV cache for `transformers` generate that writes each step in place.

transformers' DynamicCache appends a step's keys and values with `torch.cat`, which copies the
whole cache of every layer at every step: quadratic in the completion's length, ~20% of the
tiny model's decoding on CPU (bench/NOTES.md). Here each layer's cache is one buffer sized
for the longest the batch can get (prompt + max_new_tokens), written a step at a time, and
attention reads the filled part as a view: the same keys and values, so the same tokens. On
CPU the unfilled tail is never written, so the kernel never gives it pages; on a GPU the
buffer is allocated whole, about what DynamicCache's last concatenation holds (the old copy
and the new one) once completions run to half of max_new_tokens. StaticCache preallocates
too, but attends over the whole buffer under a mask: slower wherever completions stop well
before max_new_tokens (GSM8K's and MATH's case)."""

from __future__ import annotations

import inspect

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class InPlaceLayer(DynamicLayer):
    """DynamicLayer's behaviour (crop, batch selection and reordering included, which
    replace `keys` with tensors of their own) with an append that does not copy."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self._key_buffer = self._value_buffer = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys, self._key_buffer = self._append(self.keys, self._key_buffer, key_states)
        self.values, self._value_buffer = self._append(self.values, self._value_buffer, value_states)
        return self.keys, self.values

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        super().reset()

    def _append(
        self, cached: torch.Tensor, buffer: torch.Tensor | None, new: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the cache with `new` after it, as a view of its buffer; the buffer)."""
        length = cached.shape[-2] if cached.numel() else 0
        total = length + new.shape[-2]
        if not _is_prefix_view(cached, buffer, new) or total > buffer.shape[-2]:
            # the first step, a cache longer than its capacity, or `keys` replaced by a tensor
            # of its own (batch selection, beam reordering)
            size = self.capacity if total <= self.capacity else 2 * total
            grown = new.new_empty(*new.shape[:-2], size, new.shape[-1])
            if length:
                grown[..., :length, :] = cached
            buffer = grown
        buffer[..., length:total, :] = new
        return buffer[..., :total, :], buffer


def _is_prefix_view(cached: torch.Tensor, buffer: torch.Tensor | None, new: torch.Tensor) -> bool:
    """Whether `cached` is still the buffer's leading positions (after a crop it is a shorter
    one), so that the next positions can be written after it."""
    return (
        buffer is not None
        and cached.numel() > 0
        and cached.data_ptr() == buffer.data_ptr()
        and cached.stride() == buffer.stride()
        and cached.shape[:-2] == new.shape[:-2] == buffer.shape[:-2]
    )


def generate_kwargs(model, capacity: int) -> dict:
    """`generate`'s keyword argument that hands it an in-place cache: named as the model's
    forward names it (`cache` in transformers 5.24, `past_key_values` in 5.19, vLLM's pin)."""
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    return {name: in_place_cache(model.config, capacity)}


def in_place_cache(config, capacity: int) -> DynamicCache:
    """The cache DynamicCache(config) would build, its full-attention layers written in place
    (sliding-window and other special layers are kept as transformers makes them)."""
    cache = DynamicCache(config=config)
    cache.layers = [InPlaceLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
