"""The IRPO objective and the sequence log-probabilities it is computed from; pure tensor code.

Eq. 1 of Pang et al. (2024, arXiv 2404.19733 v3), per pair (winner w = (c^w, y^w), loser l):

    L = -log σ( β·[log Mθ(w|x) − log M_t(w|x)] − β·[log Mθ(l|x) − log M_t(l|x)] )
        − α · log Mθ(w|x) / (|c^w| + |y^w|)

The DPO term uses unnormalised sequence log-probs against the reference M_t; the NLL term is
the winner's alone, over its CoT + answer tokens, divided by that token count per sequence
(not a batch token mean). α = 0 is plain DPO. The batch loss is the mean over pairs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class LossParts(NamedTuple):
    loss: torch.Tensor  # scalar, what is minimised
    dpo: torch.Tensor  # scalar, mean DPO term
    nll: torch.Tensor  # scalar, mean length-normalised winner NLL
    chosen_rewards: torch.Tensor  # [B] β·log-ratio of the winner (detached)
    rejected_rewards: torch.Tensor  # [B] β·log-ratio of the loser (detached)


def dpo_nll_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    beta: float,
    alpha: float,
) -> LossParts:
    """Eq. 1 (v3) on [B] tensors of summed completion log-probs; chosen_lengths [B] counts
    the winner's scored tokens."""
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    dpo = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    nll = nll_loss(policy_chosen_logps, chosen_lengths)
    return LossParts(
        loss=dpo.mean() + alpha * nll,
        dpo=dpo.mean(),
        nll=nll,
        chosen_rewards=(beta * chosen_logratios).detach(),
        rejected_rewards=(beta * rejected_logratios).detach(),
    )


def nll_loss(logps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over sequences of -log p(completion)/|completion|: the NLL term alone, and the
    objective of the SFT baselines (on winners, STaR-like; or on gold CoTs)."""
    return (-logps / lengths.clamp(min=1).to(logps.dtype)).mean()


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the completion tokens of each row, and their count.

    logits [B, T, V] from a causal LM over input_ids [B, T]; completion_mask [B, T] is True
    at the tokens to score (the completion and its EOS; never prompt or padding). Position
    t's logits predict token t+1, hence the shift. log p = logit − logsumexp(logits): no
    [B, T, V] log-softmax copy is kept.
    """
    logits = logits[:, :-1]
    targets = input_ids[:, 1:]
    mask = completion_mask[:, 1:]
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1).float()
    token_logps = picked - torch.logsumexp(logits.float(), dim=-1)
    token_logps = torch.where(mask, token_logps, torch.zeros_like(token_logps))
    return token_logps.sum(-1), mask.sum(-1)


def shared_prompt_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """[1, 1, n, n] boolean attention mask (True: attend) of one pair's span of a
    `batching.collate` row, from its segment_ids [n] (0 prompt, 1 chosen, 2 rejected):
    causal, and a completion sees the prompt and itself, never the other completion."""
    q, k = segment_ids[:, None], segment_ids[None, :]
    causal = torch.ones(len(segment_ids), len(segment_ids), dtype=torch.bool, device=segment_ids.device).tril()
    return (causal & ((k == 0) | (k == q)))[None, None]


def _pairwise_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, pair_bounds=None, pair_masks=None, **kwargs):
    """SDPA pair by pair over a packed row: each pair attends within its own span under its
    shared-prompt mask, so attention costs the sum of the pairs' squared lengths, not the
    row's. Without pair_bounds (a plain forward of one unpadded sequence) it is causal SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if pair_bounds is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    spans = zip(pair_bounds[:-1], pair_bounds[1:])
    outs = [
        sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], mask, dropout=dropout, scaling=scaling, is_causal=False)[0]
        for (a, b), mask in zip(spans, pair_masks)
    ]
    return torch.cat(outs, dim=1), None


PAIRWISE_ATTENTION = "irpo_pairwise_sdpa"


def batch_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs [2B] (winners, then losers; [B] for SFT) and their token
    counts, from one forward over a `batching.collate` batch.

    Nothing padded is computed and each prompt once; the LM head runs at the scored
    positions only, and the float32 logsumexp is over those [N, V] logits alone: the same
    numbers as `sequence_logps` over each sequence's full logits, at a fraction of the work.
    The model's attention becomes `_pairwise_attention` (kept: activation checkpointing
    recomputes layers in backward, outside this call)."""
    from transformers import AttentionInterface

    if model.config._attn_implementation != PAIRWISE_ATTENTION:
        AttentionInterface.register(PAIRWISE_ATTENTION, _pairwise_attention)
        model.config._attn_implementation = PAIRWISE_ATTENTION
    bounds = batch["pair_bounds"].tolist()
    segments = batch["segment_ids"][0]
    masks = [shared_prompt_mask(segments[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    # The model's own forward, not its decoder alone: FSDP gathers the root's parameters
    # (embeddings, final norm, head) in hooks on that call. logits_to_keep runs the LM head
    # at the scored positions of the one packed row only: logits [N, V].
    logits = model(
        input_ids=batch["input_ids"], position_ids=batch["position_ids"], pair_bounds=bounds, pair_masks=masks,
        use_cache=False, logits_to_keep=batch["score_index"],
    ).logits[0]
    picked = logits.gather(-1, batch["score_target"][:, None]).squeeze(-1).float()
    token_logps = picked - torch.logsumexp(logits.float(), dim=-1)
    n_seq = int(batch["n_seq"])
    logps = token_logps.new_zeros(n_seq).index_add(0, batch["score_seq"], token_logps)
    return logps, torch.bincount(batch["score_seq"], minlength=n_seq)
