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
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from irpo.planning.sizing import LOGIT_CHUNK_ELEMENTS  # the bound the planner counts
from irpo.run import preemption
from irpo.run.distributed import gather, max_over_ranks, rank_slice
from irpo.training.batching import MicroBatching, collate, pair_tokens, split_to
from irpo.training.packed_attention import packed_inputs, use_packed_attention
from irpo.training.precision import numerics


@torch.no_grad()
def score_pairs(
    items: list[dict],
    dropped: int,
    load_model: Callable[[], torch.nn.Module],
    device: str,
    precision: str,
    batching: MicroBatching,
) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
    """((chosen, rejected) summed log-probs of encoded pairs (`batching.encode_examples`),
    aligned with the pairs they were encoded from, NaN where a pair was dropped; pair-tokens
    scored here). Each rank scores its share of the pairs, under the trainer's `precision`,
    with the model from load_model (whole, or its shard of it); every rank gets them all."""
    model = load_model().to(device).eval()
    chosen = torch.full((len(items) + dropped,), float("nan"))
    rejected = chosen.clone()
    tokens = 0
    groups = batching.split(rank_slice(items))
    for group in split_to(groups, max_over_ranks(len(groups))):  # a sharded model's forward is a collective
        preemption.stop_if_signalled()  # a pass is kept whole or not at all: a stop drops it
        batch = collate(group)
        tokens += pair_tokens(batch)
        batch = {k: v.to(device) for k, v in batch.items()}
        with numerics(precision, torch.device(device).type):
            c, r = batch_logps(model, batch)[0].float().cpu().chunk(2)
        chosen[batch["index"].cpu()], rejected[batch["index"].cpu()] = c, r
    del model
    parts = gather((chosen, rejected))
    # each pair was scored by exactly one rank
    for c, r in parts[1:]:
        chosen, rejected = torch.where(c.isnan(), chosen, c), torch.where(r.isnan(), rejected, r)
    return (chosen, rejected), tokens


def batch_logps(model, batch: dict, chunk_elements: int = LOGIT_CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs [2B] (winners, then losers; [B] for SFT), float32, and
    their token counts, from one forward over a `batching.collate` batch.

    Nothing padded is computed and each prompt once (irpo/training/packed_attention.py); the LM head
    runs at the scored positions only (`logits_to_keep`). The model's own forward is called,
    not its decoder alone: FSDP gathers the root's parameters (embeddings, final norm, head)
    in hooks on that call, and the head's chunked log-probs run inside it."""
    use_packed_attention(model)
    with token_logps_head(model, batch["score_target"], chunk_elements):
        token_logps = model(**packed_inputs(batch), logits_to_keep=batch["score_index"]).logits[0]
    n_seq = int(batch["n_seq"])
    logps = token_logps.new_zeros(n_seq).index_add(0, batch["score_seq"], token_logps)
    return logps, torch.bincount(batch["score_seq"], minlength=n_seq)


@contextmanager
def token_logps_head(model, targets: torch.Tensor, chunk_elements: int):
    """While open, the model's LM head returns log p(target) [1, N] float32 at the N positions
    it is given, instead of their [1, N, V] logits."""
    head = model.get_output_embeddings()
    had_own = "forward" in vars(head)
    own = vars(head).get("forward")

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        return token_logps(hidden[0], head.weight, head.bias, targets, chunk_elements)[None]

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
) -> torch.Tensor:
    """log softmax(hidden @ weightᵀ + bias)[target] per position, float32 [N], from hidden
    [N, H], weight [V, H] and targets [N]; at most chunk_elements logits exist at once, in
    forward and (recomputed) in backward."""
    step = max(1, chunk_elements // weight.shape[0])
    if len(hidden) <= step:
        return _chunk_logps(hidden, weight, bias, targets)
    recompute = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    parts = []
    for a in range(0, len(hidden), step):
        args = (hidden[a : a + step], weight, bias, targets[a : a + step])
        parts.append(checkpoint(_chunk_logps, *args, use_reentrant=False) if recompute else _chunk_logps(*args))
    return torch.cat(parts)


def _chunk_logps(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor
) -> torch.Tensor:
    # log p = logit − logsumexp(logits), in float32: no [N, V] log-softmax copy is kept.
    logits = F.linear(hidden, weight, bias)
    picked = logits.gather(-1, targets[:, None]).squeeze(-1).float()
    return picked - torch.logsumexp(logits.float(), dim=-1)
