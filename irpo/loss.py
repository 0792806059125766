"""The IRPO objective and the sequence log-probabilities it is computed from; pure tensor code
(no model, no transformers, no config).

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
