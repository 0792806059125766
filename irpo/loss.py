"""The objectives and the sequence log-probabilities they are computed from; pure tensor code
(no model, no transformers, no config). irpo/methods.py makes each one a method.

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
    dpo = sigmoid_loss(chosen_logratios - rejected_logratios, beta)
    nll = nll_loss(policy_chosen_logps, chosen_lengths)
    return LossParts(
        loss=dpo.mean() + alpha * nll,
        dpo=dpo.mean(),
        nll=nll,
        chosen_rewards=(beta * chosen_logratios).detach(),
        rejected_rewards=(beta * rejected_logratios).detach(),
    )


# The preference terms below take [B] tensors and return the per-pair loss [B]. h is the
# log-ratio margin of a pair, [log πθ(w) − log π_ref(w)] − [log πθ(l) − log π_ref(l)], from
# summed completion log-probs unless a docstring says otherwise.


def sigmoid_loss(margin: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, Eq. 7): −log σ(β·h). With label smoothing ε, conservative
    DPO (cDPO; Mitchell 2023; TRL's conservative `sigmoid`, which 1.16 keeps in its CPO
    trainer), the loss of a pair whose preference is flipped with probability ε:
    −(1−ε)·log σ(β·h) − ε·log σ(−β·h)."""
    return -(1 - label_smoothing) * F.logsigmoid(beta * margin) - label_smoothing * F.logsigmoid(-beta * margin)


def robust_loss(margin: torch.Tensor, beta: float, epsilon: float) -> torch.Tensor:
    """rDPO (Chowdhury et al. 2024, "Provably Robust DPO", Eq. 10; TRL's `robust`): the
    unbiased estimate of the clean loss under preference flips of rate ε < 1/2,
    [(1−ε)·(−log σ(β·h)) − ε·(−log σ(−β·h))] / (1 − 2ε)."""
    return (-(1 - epsilon) * F.logsigmoid(beta * margin) + epsilon * F.logsigmoid(-beta * margin)) / (1 - 2 * epsilon)


def ipo_loss(margin_per_token: torch.Tensor, tau: float) -> torch.Tensor:
    """IPO (Azar et al. 2023, Eq. 17): (h − 1/(2τ))², regressing the margin to 1/(2τ). h here
    is the margin of per-token mean log-probs (each sequence's log-ratio over its length), as
    TRL computes it and as the IPO authors' results use."""
    return (margin_per_token - 1 / (2 * tau)) ** 2


def dpop_loss(
    chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float, lam: float
) -> torch.Tensor:
    """DPO-Positive (Pal et al. 2024, "Smaug", Eq. 3): −log σ(β·(h − λ·max(0, log π_ref(w) −
    log πθ(w)))): a penalty, inside the sigmoid, once the winner's likelihood falls below the
    reference's (the likelihood displacement plain DPO allows)."""
    return -F.logsigmoid(beta * (chosen_logratios - rejected_logratios - lam * torch.clamp(-chosen_logratios, min=0)))


def simpo_loss(
    chosen_mean_logps: torch.Tensor, rejected_mean_logps: torch.Tensor, beta: float, gamma: float
) -> torch.Tensor:
    """SimPO (Meng et al. 2024, Eq. 6): −log σ(β/|w|·log πθ(w) − β/|l|·log πθ(l) − γ), with no
    reference model: the implicit reward is the length-normalised log-likelihood, and γ a
    target margin (TRL: CPO with loss_type="simpo", its `simpo_gamma` being γ)."""
    return -F.logsigmoid(beta * (chosen_mean_logps - rejected_mean_logps) - gamma)


def log_odds(mean_logps: torch.Tensor) -> torch.Tensor:
    """log[p/(1−p)] of a per-token mean log-prob log p < 0, as log p − log(1 − exp(log p)),
    stable at both ends."""
    log1mexp = torch.where(
        mean_logps > -0.6931471805599453, torch.log(-torch.expm1(mean_logps)), torch.log1p(-torch.exp(mean_logps))
    )
    return mean_logps - log1mexp


def log_odds_ratio(chosen_mean_logps: torch.Tensor, rejected_mean_logps: torch.Tensor) -> torch.Tensor:
    """ORPO's log odds ratio (Hong et al. 2024, Eqs. 4-6) of per-token mean log-probs:
    log[p_w/(1−p_w)] − log[p_l/(1−p_l)]."""
    return log_odds(chosen_mean_logps) - log_odds(rejected_mean_logps)


def orpo_loss(chosen_mean_logps: torch.Tensor, rejected_mean_logps: torch.Tensor, lam: float) -> torch.Tensor:
    """ORPO's odds-ratio term (Hong et al. 2024, Eq. 7): −λ·log σ(log odds ratio), on the policy
    alone (no reference). ORPO's objective adds it to the winner's NLL averaged per token
    (L_SFT, Eq. 2), which irpo.methods.ORPO adds as the per-sequence NLL/|w| term."""
    return -lam * F.logsigmoid(log_odds_ratio(chosen_mean_logps, rejected_mean_logps))


def kto_loss(
    logratios: torch.Tensor,
    kl: torch.Tensor,
    desirable: torch.Tensor,
    beta: float,
    desirable_weight: torch.Tensor,
    undesirable_weight: torch.Tensor,
) -> torch.Tensor:
    """KTO (Ethayarajh et al. 2024, Eq. 7) per sample, on unpaired samples labelled desirable or
    undesirable: λ_D·(1 − σ(β·(r − z₀))) for a desirable one, λ_U·(1 − σ(β·(z₀ − r))) for an
    undesirable one, where r is its log-ratio log πθ(y|x) − log π_ref(y|x) and z₀ the reference
    point, an estimate of KL(πθ ‖ π_ref) ≥ 0 (detached, from mismatched prompt/completion pairs;
    irpo.methods.KTO)."""
    value = torch.where(
        desirable, 1 - torch.sigmoid(beta * (logratios - kl)), 1 - torch.sigmoid(beta * (kl - logratios))
    )
    return torch.where(desirable, desirable_weight, undesirable_weight) * value


# Verifiable-reward policy gradients. Each prompt x has N samples y_1..y_N with rewards
# r_1..r_N (binary, or a task's graded credit); the sampling policy π_old is M_t, which is also
# the reference. Advantages are per sample, the same for all of its tokens.


class GroupAdvantages(NamedTuple):
    advantages: torch.Tensor  # [P, N]
    equal: torch.Tensor  # [P] bool: the prompt's N rewards are all equal (every advantage 0)


def group_advantages(rewards: torch.Tensor, scale: bool = True) -> GroupAdvantages:
    """GRPO's advantage (Shao et al. 2024, DeepSeekMath, Sec. 4.1.2, outcome supervision) of
    rewards [P, N]: Â_i = (r_i − mean(r)) / (std(r) + 1e-4), std the sample (N − 1) standard
    deviation, 1e-4 as TRL (1.16, scale_rewards="group") adds it. scale=False is Dr. GRPO's
    (Liu et al. 2025, "Understanding R1-Zero-Like Training", Sec. 3.1): Â_i = r_i − mean(r),
    with no division by the group's std (which weights prompts by their difficulty)."""
    centred = rewards - rewards.mean(-1, keepdim=True)
    std = rewards.std(-1, keepdim=True) if rewards.shape[-1] > 1 else torch.zeros_like(centred[..., :1])
    equal = (rewards == rewards[..., :1]).all(-1)
    return GroupAdvantages(centred / (std + 1e-4) if scale else centred, equal)


def leave_one_out_advantages(rewards: torch.Tensor) -> GroupAdvantages:
    """RLOO's advantage (Ahmadian et al. 2024, "Back to Basics", Eq. 6; Kool et al. 2019) of
    rewards [P, N], N ≥ 2: Â_i = r_i − (1/(N−1))·Σ_{j≠i} r_j, each sample's baseline the mean
    reward of the prompt's other samples."""
    n = rewards.shape[-1]
    baseline = (rewards.sum(-1, keepdim=True) - rewards) / max(n - 1, 1)
    return GroupAdvantages(rewards - baseline, (rewards == rewards[..., :1]).all(-1))


class ClippedRatio(NamedTuple):
    per_token: torch.Tensor  # [B, T] the per-token loss, KL term included (0 where masked)
    ratio: torch.Tensor  # [B, T] π_θ/π_old per token (detached)
    low_clipped: torch.Tensor  # [B, T] bool: ratio < 1 − ε_low with Â < 0 (the clip holds it)
    high_clipped: torch.Tensor  # [B, T] bool: ratio > 1 + ε_high with Â > 0
    kl: torch.Tensor  # [B, T] the k3 estimate of KL(π_θ ‖ π_ref) per token (detached; 0 where masked)


def clipped_ratio_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon: float,
    epsilon_high: float,
    beta_kl: float = 0.0,
    ref_logps: torch.Tensor | None = None,
) -> ClippedRatio:
    """GRPO's per-token surrogate (Shao et al. 2024, Eq. 3; PPO's clip, Schulman et al. 2017,
    Eq. 7), on per-token log-probs [B, T] of the policy and the sampling policy, advantages [B]
    and the completion mask [B, T]: with ρ_t = π_θ(y_t|x, y_<t) / π_old(y_t|x, y_<t),

        ℓ_t = −min(ρ_t·Â, clip(ρ_t, 1 − ε_low, 1 + ε_high)·Â) + β_KL·D_t,
        D_t = π_ref/π_θ − log(π_ref/π_θ) − 1   (the k3 estimator, ≥ 0; Eq. 4)

    ε_high > ε_low is DAPO's asymmetric "clip-higher" (Yu et al. 2025, Eq. 10). How ℓ_t is
    averaged is the method's (`aggregate`). ref_logps default to old_logps (irpo's reference
    is the sampling policy M_t)."""
    advantages = advantages[:, None].to(logps.dtype)
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon_high)
    per_token = -torch.min(ratio * advantages, clipped * advantages)
    ref = old_logps if ref_logps is None else ref_logps
    kl = torch.exp(ref - logps) - (ref - logps) - 1
    if beta_kl:
        per_token = per_token + beta_kl * kl
    mask = mask.bool()
    zero = torch.zeros_like(per_token)
    return ClippedRatio(
        torch.where(mask, per_token, zero),
        ratio.detach(),
        (ratio < 1 - epsilon) & (advantages < 0) & mask,
        (ratio > 1 + epsilon_high) & (advantages > 0) & mask,
        torch.where(mask, kl, zero).detach(),
    )


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, how: str, constant: float = 1.0) -> torch.Tensor:
    """The micro-batch's loss from masked per-token losses [B, T]:

    - "sequence": mean over sequences of each one's token mean (GRPO, Shao et al. 2024, Eq. 3;
      TRL's loss_type="grpo"), which weighs a token of a short completion more;
    - "constant": Σ_t ℓ_t / constant per sequence, mean over sequences (Dr. GRPO, Liu et al.
      2025, Eq. 4: the 1/|o_i| dropped, a constant, the most tokens a completion may have, kept
      so the step size does not grow with the sequence length; TRL's "dr_grpo");
    - "token": the mean over all the micro-batch's tokens (DAPO's token-level loss, Yu et al.
      2025, Eq. 8). Over a step of several micro-batches or ranks, the module weights each
      micro-batch by its share of the step's tokens, so that the step's loss is the mean over
      all of its tokens (TRL's "dapo", whose normalizer is the step's token count)."""
    mask = mask.to(per_token.dtype)
    if how == "sequence":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    if how == "constant":
        return (per_token * mask).sum(-1).mean() / constant
    if how == "token":
        return (per_token * mask).sum() / mask.sum().clamp(min=1)
    raise ValueError(f"unknown aggregation {how!r}: sequence, constant or token")


def sequence_ratio_loss(
    logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, epsilon: float, epsilon_high: float
) -> ClippedRatio:
    """RLOO's surrogate (Ahmadian et al. 2024, Sec. 3.2: the whole completion is one action),
    on summed completion log-probs [B]: −min(ρ·Â, clip(ρ, 1 − ε_low, 1 + ε_high)·Â) with
    ρ = π_θ(y|x) / π_old(y|x), one ratio per sequence (as TRL 1.16's RLOOTrainer clips it).
    The per-sequence fields are [B] and `kl` is zero (see irpo.methods.RLOO)."""
    advantages = advantages.to(logps.dtype)
    ratio = torch.exp(logps - old_logps)
    loss = -torch.min(ratio * advantages, torch.clamp(ratio, 1 - epsilon, 1 + epsilon_high) * advantages)
    return ClippedRatio(
        loss,
        ratio.detach(),
        (ratio < 1 - epsilon) & (advantages < 0),
        (ratio > 1 + epsilon_high) & (advantages > 0),
        torch.zeros_like(loss).detach(),
    )


def nll_loss(logps: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over sequences of -log p(completion)/|completion|: the NLL term alone, and the
    objective of the SFT baselines (on winners, STaR-like; or on gold CoTs)."""
    return (-logps / lengths.clamp(min=1).to(logps.dtype)).mean()


def sequence_logps(
    logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
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
