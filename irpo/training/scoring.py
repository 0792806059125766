"""Log-probabilities of completions under a model: the reference and log-prob passes over an
iteration's pairs (`score_pairs`, split over the ranks), and the forward they and training
share (`batch_logps`): one forward over a packed batch (`batching.collate`), the LM head and
its float32 log-softmax run over chunks of the scored positions, never over [tokens ×
vocabulary] at once.

At Qwen's 151,936-token vocabulary, 8k scored tokens would hold ~5 GB of float32 logits (and
as much again for their gradient); in chunks of LOGIT_CHUNK_ELEMENTS logits a chunk's are
freed before the next is computed, and in backward each chunk is recomputed from the hidden
states it came from (activation checkpointing of the head alone). A batch that fits in one
chunk (a small vocabulary) is computed as one plain head call, with the same numbers.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from irpo.planning.sizing import LOGIT_CHUNK_ELEMENTS  # the bound the planner counts
from irpo.run import preemption
from irpo.run.distributed import gather, max_over_ranks, rank_slice
from irpo.training.batching import MicroBatching, collate, pair_tokens, split_to
from irpo.training.packed_attention import packed_inputs, use_packed_attention
from irpo.training.precision import numerics


class TokenTable(NamedTuple):
    """Per-token log-probs of every item's scored tokens, ragged: item i's are
    values[offsets[i]:offsets[i + 1]] (none for an item dropped as too long), float32."""

    values: torch.Tensor  # [total tokens]
    offsets: torch.Tensor  # [items + 1] int64


def table_offsets(items: list[dict], dropped: int) -> torch.Tensor:
    """Where each item's scored tokens start in a TokenTable (a completion's every token and its
    EOS, the first predicted from the prompt's last position; batching.collate)."""
    lengths = torch.zeros(len(items) + dropped + 1, dtype=torch.long)
    for it in items:
        lengths[it["index"] + 1] = len(it["chosen_ids"]) - (0 if it["prompt_ids"] else 1)
    return lengths.cumsum(0)


@torch.no_grad()
def score_pairs(
    items: list[dict],
    dropped: int,
    load_model: Callable[[], torch.nn.Module],
    device: str,
    precision: str,
    batching: MicroBatching,
    temperature: float = 1.0,
    tokens: bool = False,
) -> tuple[tuple[torch.Tensor, torch.Tensor], int] | tuple[tuple[torch.Tensor, torch.Tensor], int, TokenTable]:
    """((chosen, rejected) summed log-probs of encoded pairs (`batching.encode_examples`),
    aligned with the pairs they were encoded from, NaN where a pair was dropped (rejected all
    NaN for unpaired items); pair-tokens scored here). Each rank scores its share of the pairs,
    under the trainer's `precision`, with the model from load_model (whole, or its shard of
    it); every rank gets them all. With `tokens`, also the items' TokenTable (unpaired items),
    all at `temperature` (log softmax(logits / temperature), as they were sampled)."""
    model = load_model().to(device).eval()
    chosen = torch.full((len(items) + dropped,), float("nan"))
    rejected = chosen.clone()
    offsets = table_offsets(items, dropped) if tokens else None
    table = torch.full((int(offsets[-1]),), float("nan")) if tokens else None
    scored = 0
    groups = batching.split(rank_slice(items))
    for group in split_to(groups, max_over_ranks(len(groups))):  # a sharded model's forward is a collective
        preemption.stop_if_signalled()  # a pass is kept whole or not at all: a stop drops it
        batch = collate(group)
        scored += pair_tokens(batch)
        batch = {k: v.to(device) for k, v in batch.items()}
        with numerics(precision, torch.device(device).type):
            flat = batch_token_logps(model, batch, temperature=temperature)
        logps = flat.new_zeros(int(batch["n_seq"])).index_add(0, batch["score_seq"], flat).float().cpu()
        flat, seq = flat.float().cpu(), batch["score_seq"].cpu()
        index = batch["index"].cpu()
        if group[0]["rejected_ids"] is None:
            chosen[index] = logps
        else:
            chosen[index], rejected[index] = logps.chunk(2)
        if tokens:  # unpaired: the sequences' tokens come one after another, in item order
            for i, part in zip(index.tolist(), flat.split(torch.bincount(seq, minlength=len(group)).tolist())):
                table[offsets[i] : offsets[i + 1]] = part
    del model
    parts = gather((chosen, rejected, table))
    # each pair was scored by exactly one rank
    for c, r, t in parts[1:]:
        chosen, rejected = torch.where(c.isnan(), chosen, c), torch.where(r.isnan(), rejected, r)
        if tokens:
            table = torch.where(t.isnan(), table, t)
    if tokens:
        return (chosen, rejected), scored, TokenTable(table, offsets)
    return (chosen, rejected), scored


def batch_logps(
    model, batch: dict, chunk_elements: int = LOGIT_CHUNK_ELEMENTS, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs [2B] (winners, then losers; [B] for SFT), float32, and
    their token counts, from one forward over a `batching.collate` batch."""
    token_logps = batch_token_logps(model, batch, chunk_elements, temperature)
    n_seq = int(batch["n_seq"])
    logps = token_logps.new_zeros(n_seq).index_add(0, batch["score_seq"], token_logps)
    return logps, torch.bincount(batch["score_seq"], minlength=n_seq)


def batch_token_logps(
    model, batch: dict, chunk_elements: int = LOGIT_CHUNK_ELEMENTS, temperature: float = 1.0
) -> torch.Tensor:
    """log p(token) of every scored token of a `batching.collate` batch, float32 [N], in the
    batch's flat order (batch["score_seq"] names each one's sequence), from one forward; at a
    sampling temperature, log softmax(logits / temperature) (as TRL scores them).

    Nothing padded is computed and each prompt once (irpo/training/packed_attention.py); the LM head
    runs at the scored positions only (`logits_to_keep`). The model's own forward is called,
    not its decoder alone: FSDP gathers the root's parameters (embeddings, final norm, head)
    in hooks on that call, and the head's chunked log-probs run inside it."""
    use_packed_attention(model)
    with token_logps_head(model, batch["score_target"], chunk_elements, temperature):
        return model(**packed_inputs(batch), logits_to_keep=batch["score_index"]).logits[0]


def padded(flat: torch.Tensor, seq: torch.Tensor, n_seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat per-token values [N] whose sequences (seq [N], each one's tokens contiguous and in
    order) are 0..n_seq-1, as [n_seq, T] left-aligned and 0-padded, and its mask [n_seq, T]."""
    counts = torch.bincount(seq, minlength=n_seq)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(len(flat), device=flat.device) - starts[seq]
    width = int(counts.max()) if n_seq else 0
    out = flat.new_zeros(n_seq, width).index_put((seq, position), flat)
    mask = torch.zeros(n_seq, width, dtype=torch.bool, device=flat.device).index_put(
        (seq, position), torch.ones_like(flat, dtype=torch.bool)
    )
    return out, mask


@contextmanager
def token_logps_head(model, targets: torch.Tensor, chunk_elements: int, temperature: float = 1.0):
    """While open, the model's LM head returns log p(target) [1, N] float32 at the N positions
    it is given, instead of their [1, N, V] logits."""
    head = model.get_output_embeddings()
    had_own = "forward" in vars(head)
    own = vars(head).get("forward")

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        return token_logps(hidden[0], head.weight, head.bias, targets, chunk_elements, temperature)[None]

    head.forward = forward
    try:
        yield
    finally:
        if had_own:
            head.forward = own
        else:
            del head.forward


def token_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk_elements: int = LOGIT_CHUNK_ELEMENTS,
    temperature: float = 1.0,
) -> torch.Tensor:
    """log softmax((hidden @ weightᵀ + bias) / temperature)[target] per position, float32 [N],
    from hidden [N, H], weight [V, H] and targets [N]; at most chunk_elements logits exist at
    once, in forward and (recomputed) in backward."""
    step = max(1, chunk_elements // weight.shape[0])
    if len(hidden) <= step:
        return _chunk_logps(hidden, weight, bias, targets, temperature)
    recompute = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    parts = []
    for a in range(0, len(hidden), step):
        args = (hidden[a : a + step], weight, bias, targets[a : a + step], temperature)
        parts.append(checkpoint(_chunk_logps, *args, use_reentrant=False) if recompute else _chunk_logps(*args))
    return torch.cat(parts)


def _chunk_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    # log p = logit − logsumexp(logits), in float32: no [N, V] log-softmax copy is kept.
    logits = F.linear(hidden, weight, bias)
    if temperature != 1.0:
        logits = logits.float() / temperature
    picked = logits.gather(-1, targets[:, None]).squeeze(-1).float()
    return picked - torch.logsumexp(logits.float(), dim=-1)
