"""The packed training step's attention (a speed path, kept apart from the math): a micro-batch
is one row of pairs [prompt, chosen, rejected] with no padding (`batching.collate`), and
attention runs pair by pair under a shared-prompt mask, so it costs the sum of the pairs'
squared lengths, not the row's, and each prompt is computed once.

`use_packed_attention(model)` registers `pairwise_attention` with transformers'
AttentionInterface and switches the model to it; it stays switched, since activation
checkpointing recomputes layers in backward, outside the forward call.
"""

from __future__ import annotations

import torch

PAIRWISE_ATTENTION = "irpo_pairwise_sdpa"


def shared_prompt_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """[1, 1, n, n] boolean attention mask (True: attend) of one pair's span of a
    `batching.collate` row, from its segment_ids [n] (0 prompt, 1 chosen, 2 rejected):
    causal, and a completion sees the prompt and itself, never the other completion."""
    q, k = segment_ids[:, None], segment_ids[None, :]
    causal = torch.ones(len(segment_ids), len(segment_ids), dtype=torch.bool, device=segment_ids.device).tril()
    return (causal & ((k == 0) | (k == q)))[None, None]


def pairwise_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, pair_bounds=None, pair_masks=None, **kwargs):
    """SDPA pair by pair over a packed row: each pair attends within its own span under its
    shared-prompt mask. Without pair_bounds (a plain forward of one unpadded sequence) it is
    causal SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if pair_bounds is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    spans = zip(pair_bounds[:-1], pair_bounds[1:])
    outs = [
        sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], mask, dropout=dropout, scaling=scaling, is_causal=False)[0]
        for (a, b), mask in zip(spans, pair_masks)
    ]
    return torch.cat(outs, dim=1), None


def use_packed_attention(model) -> None:
    from transformers import AttentionInterface

    if model.config._attn_implementation != PAIRWISE_ATTENTION:
        AttentionInterface.register(PAIRWISE_ATTENTION, pairwise_attention)
        model.config._attn_implementation = PAIRWISE_ATTENTION


def packed_inputs(batch: dict) -> dict:
    """The forward's keyword arguments for a `collate` batch: ids, positions, and each pair's
    span and mask."""
    bounds = batch["pair_bounds"].tolist()
    segments = batch["segment_ids"][0]
    masks = [shared_prompt_mask(segments[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    return dict(input_ids=batch["input_ids"], position_ids=batch["position_ids"], pair_bounds=bounds, pair_masks=masks, use_cache=False)
