"""The packed training step's attention (a speed path, kept apart from the math): a micro-batch
is one row of pairs [prompt, chosen, rejected] with no padding (`batching.collate`), and
attention runs pair by pair, a completion seeing its prompt and itself, never the other
completion, so it costs the sum of the pairs' squared lengths, not the row's, and each
prompt goes through the layers once.

`use_packed_attention(model)` registers `pairwise_attention` with transformers'
AttentionInterface and switches the model to it; it stays switched, since activation
checkpointing recomputes layers in backward, outside the forward call.
"""

from __future__ import annotations

import torch

PAIRWISE_ATTENTION = "irpo_pairwise_sdpa"


def pairwise_attention(
    module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, pair_layout=None, **kwargs
):
    """Attention pair by pair over a packed row, with no mask: [prompt, chosen] is one causal
    SDPA call (the prompt's outputs and the winner's), [prompt, rejected] another, of which
    only the loser's outputs are kept; each pair costs (p+c)² + (p+r)², and no [n, n] mask
    is built, so memory stays linear in the pair's length where the kernel is a fused one.
    pair_layout holds (start, p, c, r) per pair. Without it (a plain forward of one unpadded
    sequence) it is causal SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def causal(q, k, v):
        return sdpa_attention_forward(module, q, k, v, None, dropout=dropout, scaling=scaling, is_causal=True)[0]

    if pair_layout is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    outs = []
    for a, p, c, r in pair_layout:
        outs.append(causal(query[:, :, a : a + p + c], key[:, :, a : a + p + c], value[:, :, a : a + p + c]))
        if r:
            prompt, loser = slice(a, a + p), slice(a + p + c, a + p + c + r)
            q, k, v = (torch.cat([t[:, :, prompt], t[:, :, loser]], dim=2) for t in (query, key, value))
            outs.append(causal(q, k, v)[:, p:])
    return torch.cat(outs, dim=1), None


def use_packed_attention(model) -> None:
    from transformers import AttentionInterface

    if model.config._attn_implementation != PAIRWISE_ATTENTION:
        AttentionInterface.register(PAIRWISE_ATTENTION, pairwise_attention)
        model.config._attn_implementation = PAIRWISE_ATTENTION


def packed_inputs(batch: dict) -> dict:
    """The forward's keyword arguments for a `collate` batch: ids, positions, and each pair's
    (start, prompt, chosen, rejected) lengths."""
    bounds = batch["pair_bounds"].tolist()
    segments = batch["segment_ids"][0]
    counts = [torch.bincount(segments[a:b], minlength=3).tolist() for a, b in zip(bounds[:-1], bounds[1:])]
    layout = [(a, *n) for a, n in zip(bounds[:-1], counts)]
    return dict(input_ids=batch["input_ids"], position_ids=batch["position_ids"], pair_layout=layout, use_cache=False)
