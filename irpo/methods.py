"""Methods: what the loop asks of a training method, answered by the object `conf/method/`
instantiates (`_target_`), so that the loop, the datamodule, the LightningModule and the
planner never test a method's name or kind.

A method says whether an iteration samples from M_t, what one training item holds (a
(winner, loser) pair, or one sequence), which items it trains on, whether it needs the
reference M_t's log-probs, and its objective from the items' log-probs. Its fields are its
hyperparameters, typed: the config's values are checked against them at start (`build`).
The objectives' math (irpo/loss.py) is imported where a step computes it, so that building
and checking a method at start loads no torch: a config error answers in a second.

A method of your own is a dataclass subclassing `Method` in any importable module, with a
YAML file in a `method/` folder on Hydra's search path:

    # my_methods.py                          # conf/method/hinge.yaml
    @dataclass                               # @package _global_
    class Hinge(Method):                     method:
        beta: float = 0.1                      _target_: my_methods.Hinge
        paired: ClassVar[bool] = True          name: hinge
        reference: ClassVar[bool] = True       beta: ${beta}
        def items(self, data): return data.pairs()
        def objective(self, policy, ref): ...

    python -m irpo method=hinge hydra.searchpath=[file://conf]   (my_methods importable)
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Optional, Protocol

from irpo.errors import ConfigError

if TYPE_CHECKING:
    import torch


class Items(NamedTuple):
    """What an iteration trains on, aligned by position: item i is (prompts[i], chosen[i])
    or, for a paired method, (prompts[i], chosen[i], rejected[i]), both scored in one packed
    row; labels[i], where a method has them, reaches its objective (BatchLogps.labels)."""

    prompts: list[str]
    chosen: list[str]
    rejected: list[str] | None
    labels: list[float] | None = None


class TrainingData(Protocol):
    """What a method chooses its items from (irpo.training.data.IterationData serves both)."""

    def pairs(self) -> Items:
        """The iteration's (winner, loser) pairs (pairs.jsonl)."""

    def golds(self) -> Items:
        """Each train prompt's gold chain of thought, where the task has one."""

    def samples(self) -> list[dict]:
        """Every sample of the iteration (generations.jsonl), each with its prompt's text:
        prompt_id, prompt, completion, answer, reward."""


class BatchLogps(NamedTuple):
    """Summed completion log-probs of a micro-batch's items under one model, float32 [B],
    and their scored token counts; `rejected*` are None for unpaired items."""

    chosen: torch.Tensor
    rejected: torch.Tensor | None
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor | None
    labels: torch.Tensor | None = None  # Items.labels of the micro-batch's items
    # A token-level method's (Method.token_level) per-token log-probs of the items' completions,
    # [B, T] float32 left-aligned and 0-padded, and where they are real, [B, T] bool; None else.
    token_logps: torch.Tensor | None = None
    token_mask: torch.Tensor | None = None


@dataclass
class Method:
    """The interface. Class attributes say what the loop must do for the method; fields are
    the hyperparameters its YAML sets."""

    name: str
    # Sample and pair every iteration even when training uses no samples (SFT on gold), so
    # that the log-prob pass measures the model's own winners and losers under every method
    # (the paper's Fig. 2); None: only when training uses them.
    sample: Optional[bool] = None

    trains: ClassVar[bool] = True  # False: M_0 is evaluated, nothing is trained
    uses_samples: ClassVar[bool] = True  # its items come from M_t's samples
    # its items are the iteration's pairs or drawn from them: an iteration that made no pair has
    # nothing to train on, and max_pairs caps them
    from_pairs: ClassVar[bool] = True
    paired: ClassVar[bool] = False  # an item is (prompt, winner, loser), both scored in one row
    reference: ClassVar[bool] = False  # its objective needs the reference M_t's log-probs
    items_name: ClassVar[str] = "sequences"  # what an item is, in messages and the plan
    # A policy-gradient method: its items are scored at the iteration's sampling temperature (the
    # sampling policy's log-probs), BatchLogps carries per-token log-probs, and the reference
    # pass stores M_t's per-token table beside the summed log-probs (M_t sampled: it is π_old).
    token_level: ClassVar[bool] = False

    @property
    def token_mean(self) -> bool:
        """Whether a step's loss is the mean over its scored tokens (each micro-batch's weighted
        by its share of the step's tokens, over every rank) rather than over its items (by its
        share of the step's items): so that a step's gradient is the same however it is cut."""
        return False

    @property
    def samples(self) -> bool:
        """Whether an iteration samples from M_t and pairs the samples."""
        return self.uses_samples if self.sample is None else self.sample

    def items(self, data: TrainingData) -> Items:
        """The iteration's training items."""
        raise NotImplementedError

    def items_per_prompt(self, num_samples: int, pairs_per_prompt: int) -> int:
        """The most items one train prompt gives (the planner's count)."""
        return pairs_per_prompt

    def objective(
        self, policy: BatchLogps, reference: BatchLogps | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The mean loss over a micro-batch's items, and what is logged of it (under
        `train/`; `loss` among them)."""
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("name", "sample")}


@dataclass
class Pairwise(Method):
    """A preference objective on (winner, loser) pairs, plus α times the winner's NLL/|w|
    (per sequence; α = 0 leaves the preference term alone). A subclass gives its term: the
    per-pair loss and the implicit rewards of winner and loser that it logs (their mean
    difference is `reward_margin`, the fraction of pairs where the winner's is higher
    `reward_accuracy`)."""

    alpha: float = 1.0

    paired: ClassVar[bool] = True
    reference: ClassVar[bool] = True
    items_name: ClassVar[str] = "pairs"
    term_name: ClassVar[str] = "preference"

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ConfigError(f"alpha must be >= 0, got {self.alpha}")
        for key in ("beta", "tau", "lam"):
            if key in self.hyperparameters() and getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be > 0 for the {self.term_name.upper()} term, got {getattr(self, key)}")

    def items(self, data: TrainingData) -> Items:
        return data.pairs()

    def term(self, policy: BatchLogps, reference: BatchLogps | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(per-pair loss [B], winner's implicit reward [B], loser's [B])."""
        raise NotImplementedError

    def objective(
        self, policy: BatchLogps, reference: BatchLogps | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from irpo.loss import nll_loss

        losses, chosen_rewards, rejected_rewards = self.term(policy, reference)
        term, nll = losses.mean(), nll_loss(policy.chosen, policy.chosen_tokens)
        margin = (chosen_rewards - rejected_rewards).detach()
        return term + self.alpha * nll, {
            "loss": term + self.alpha * nll,
            f"{self.term_name}_loss": term,
            "nll_loss": nll,
            "reward_accuracy": (margin > 0).float().mean(),
            "reward_margin": margin.mean(),
            "chosen_logps": policy.chosen.mean(),
            "rejected_logps": policy.rejected.mean(),
        }


def _logratios(policy: BatchLogps, reference: BatchLogps) -> tuple[torch.Tensor, torch.Tensor]:
    return policy.chosen - reference.chosen, policy.rejected - reference.rejected


def _mean_logps(logps: BatchLogps) -> tuple[torch.Tensor, torch.Tensor]:
    return logps.chosen / logps.chosen_tokens.clamp(min=1), logps.rejected / logps.rejected_tokens.clamp(min=1)


@dataclass
class DPO(Pairwise):
    """Eq. 1 of Pang et al. (2024): DPO against the reference M_t (irpo.loss.sigmoid_loss) plus
    α·NLL/|w|: `irpo` (α = 1) and `dpo` (α = 0). Implicit reward: β·log-ratio."""

    beta: float = 0.1
    term_name: ClassVar[str] = "dpo"

    def term(self, policy: BatchLogps, reference: BatchLogps | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from irpo.loss import sigmoid_loss

        chosen, rejected = _logratios(policy, reference)
        return sigmoid_loss(chosen - rejected, self.beta), self.beta * chosen, self.beta * rejected


@dataclass
class CDPO(Pairwise):
    """Conservative DPO (Mitchell 2023; TRL's conservative `sigmoid`): DPO with
    label smoothing ε, the rate at which a pair's preference is taken to be flipped.
    Implicit reward: β·log-ratio."""

    beta: float = 0.1
    label_smoothing: float = 0.1
    term_name: ClassVar[str] = "cdpo"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")

    def term(self, policy: BatchLogps, reference: BatchLogps | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from irpo.loss import sigmoid_loss

        chosen, rejected = _logratios(policy, reference)
        return (
            sigmoid_loss(chosen - rejected, self.beta, self.label_smoothing),
            self.beta * chosen,
            self.beta * rejected,
        )


@dataclass
class RDPO(Pairwise):
    """Robust DPO (Chowdhury et al. 2024; TRL's `robust`): the unbiased loss under preference
    flips of rate ε (irpo.loss.robust_loss). Implicit reward: β·log-ratio."""

    beta: float = 0.1
    epsilon: float = 0.1
    term_name: ClassVar[str] = "rdpo"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.epsilon < 0.5:
            raise ConfigError(f"epsilon must be in [0, 0.5), got {self.epsilon}")

    def term(self, policy: BatchLogps, reference: BatchLogps | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from irpo.loss import robust_loss

        chosen, rejected = _logratios(policy, reference)
        return robust_loss(chosen - rejected, self.beta, self.epsilon), self.beta * chosen, self.beta * rejected


@dataclass
class IPO(Pairwise):
    """IPO (Azar et al. 2023): the per-token log-ratio margin regressed to 1/(2τ)
    (irpo.loss.ipo_loss). Implicit reward: the per-token log-ratio."""

    tau: float = 0.1
    term_name: ClassVar[str] = "ipo"

    def term(self, policy: BatchLogps, reference: BatchLogps | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from irpo.loss import ipo_loss

        chosen, rejected = _logratios(policy, reference)
        chosen, rejected = chosen / policy.chosen_tokens.clamp(min=1), rejected / policy.rejected_tokens.clamp(min=1)
        return ipo_loss(chosen - rejected, self.tau), chosen, rejected


@dataclass
class DPOP(Pairwise):
    """DPO-Positive (Pal et al. 2024): DPO with a penalty λ once the winner's log-likelihood
    falls below the reference's (irpo.loss.dpop_loss). Implicit reward: β·log-ratio."""

    beta: float = 0.1
    lam: float = 50.0  # the paper's λ for its math and reasoning runs
    term_name: ClassVar[str] = "dpop"

    def term(self, policy: BatchLogps, reference: BatchLogps | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from irpo.loss import dpop_loss

        chosen, rejected = _logratios(policy, reference)
        return dpop_loss(chosen, rejected, self.beta, self.lam), self.beta * chosen, self.beta * rejected


@dataclass
class SimPO(Pairwise):
    """SimPO (Meng et al. 2024): reference-free, length-normalised, with a target margin γ
    (irpo.loss.simpo_loss). Implicit reward: β·per-token mean log-prob."""

    beta: float = 2.0  # the paper's range is 2-2.5 (γ/β around 0.5)
    gamma: float = 1.0
    reference: ClassVar[bool] = False
    term_name: ClassVar[str] = "simpo"

    def term(self, policy: BatchLogps, reference: BatchLogps | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from irpo.loss import simpo_loss

        chosen, rejected = _mean_logps(policy)
        return simpo_loss(chosen, rejected, self.beta, self.gamma), self.beta * chosen, self.beta * rejected


@dataclass
class ORPO(Pairwise):
    """ORPO (Hong et al. 2024): the odds-ratio term λ·(−log σ(log odds ratio)) on the policy
    alone, plus the winner's NLL averaged per token (its L_SFT, weight α = 1 in the paper;
    per sequence, as every irpo objective: TRL averages over the batch's tokens instead).
    Implicit reward: each side's log odds of its per-token mean log-prob."""

    lam: float = 0.1
    reference: ClassVar[bool] = False
    term_name: ClassVar[str] = "orpo"

    def term(self, policy: BatchLogps, reference: BatchLogps | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from irpo.loss import log_odds, orpo_loss

        chosen, rejected = _mean_logps(policy)
        return orpo_loss(chosen, rejected, self.lam), log_odds(chosen), log_odds(rejected)


@dataclass
class _SFT(Method):
    """The NLL term alone, per sequence and length-normalised (irpo.loss.nll_loss)."""

    def objective(
        self, policy: BatchLogps, reference: BatchLogps | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from irpo.loss import nll_loss

        loss = nll_loss(policy.chosen, policy.chosen_tokens)
        return loss, {"loss": loss, "nll_loss": loss, "chosen_logps": policy.chosen.mean()}


@dataclass
class WinnerSFT(_SFT):
    """SFT on the model's own correct samples, each winner once (STaR-like; the paper's
    'SFT on chosen sequences', Table 1)."""

    items_name: ClassVar[str] = "winners"

    def items(self, data: TrainingData) -> Items:
        pairs = data.pairs()
        chosen = list(dict.fromkeys(zip(pairs.prompts, pairs.chosen)))
        return Items([p for p, _ in chosen], [c for _, c in chosen], None)


@dataclass
class GoldSFT(_SFT):
    """SFT on the dataset's gold chains of thought (the paper's 'SFT on gold CoT', Table 1);
    no samples needed."""

    uses_samples: ClassVar[bool] = False
    from_pairs: ClassVar[bool] = False
    items_name: ClassVar[str] = "gold chains of thought"

    def items(self, data: TrainingData) -> Items:
        return data.golds()

    def items_per_prompt(self, num_samples: int, pairs_per_prompt: int) -> int:
        return 1


@dataclass
class ZeroShot(Method):
    """M_0 evaluated; nothing sampled or trained (the paper's zero-shot CoT row)."""

    trains: ClassVar[bool] = False
    uses_samples: ClassVar[bool] = False
    from_pairs: ClassVar[bool] = False

    def items_per_prompt(self, num_samples: int, pairs_per_prompt: int) -> int:
        return 0


@dataclass
class KTO(Method):
    """KTO (Ethayarajh et al. 2024) on every sample, labelled by its reward (desirable: correct),
    prompts that gave no pair included (irpo.loss.kto_loss). The reference point z₀ is the
    mean log-ratio, clamped at 0 and detached, of each micro-batch's mismatched completions:
    item i is scored with the completion of a sample of another prompt, fixed before the
    reference pass (the next prompt's sample of the same index; with one prompt, its own), so
    the precomputed reference log-probs cover both. As in TRL, where z₀ is the mean over a
    device's batch, z₀ depends on how a step is cut (trainer.micro_batch_size/_tokens). λ_D/λ_U are set per iteration so that λ_D·n_D / (λ_U·n_U) lies in
    [1, 4/3], as the paper recommends. An item is two scored sequences, as a pair is, so a
    step of trainer.batch_size items forwards as many sequences as the pairwise arms'.
    Implicit reward: β·log-ratio; `kl` logs z₀."""

    beta: float = 0.1
    alpha: float = 0.0  # α·NLL/|y| on the desirable samples
    desirable_at: float = 1.0  # the reward from which a sample is desirable (graded rewards)

    paired: ClassVar[bool] = True  # (completion, mismatched completion)
    reference: ClassVar[bool] = True
    from_pairs: ClassVar[bool] = False
    items_name: ClassVar[str] = "labelled samples"

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ConfigError(f"beta must be > 0 for the KTO term, got {self.beta}")
        if self.alpha < 0:
            raise ConfigError(f"alpha must be >= 0, got {self.alpha}")

    def items(self, data: TrainingData) -> Items:
        rows = sorted(data.samples(), key=lambda r: (r["prompt_id"], r.get("sample", 0)))
        if not rows:
            return Items([], [], [], [])
        per_prompt = sum(1 for r in rows if r["prompt_id"] == rows[0]["prompt_id"])
        mismatched = [rows[(i + per_prompt) % len(rows)]["completion"] for i in range(len(rows))]
        desirable = [r["reward"] >= self.desirable_at for r in rows]
        wanted_d, wanted_u = self.weights(sum(desirable), len(rows) - sum(desirable))
        labels = [wanted_d if d else -wanted_u for d in desirable]
        return Items([r["prompt"] for r in rows], [r["completion"] for r in rows], mismatched, labels)

    @staticmethod
    def weights(desirable: int, undesirable: int) -> tuple[float, float]:
        """(λ_D, λ_U), λ_U = 1: λ_D·n_D / n_U is n_D / n_U brought into [1, 4/3]."""
        if not desirable or not undesirable:
            return 1.0, 1.0
        ratio = desirable / undesirable
        return min(max(ratio, 1.0), 4 / 3) / ratio, 1.0

    def items_per_prompt(self, num_samples: int, pairs_per_prompt: int) -> int:
        return num_samples

    def objective(
        self, policy: BatchLogps, reference: BatchLogps | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from irpo.loss import kto_loss, nll_loss

        logratios = policy.chosen - reference.chosen
        kl = (policy.rejected - reference.rejected).mean().clamp(min=0).detach()
        desirable = policy.labels > 0
        losses = kto_loss(logratios, kl, desirable, self.beta, policy.labels.abs(), policy.labels.abs())
        term = losses.mean()
        has = desirable.any()
        nll = nll_loss(policy.chosen[desirable], policy.chosen_tokens[desirable]) if has else term.new_zeros(())
        rewards = (self.beta * logratios).detach()
        return term + self.alpha * nll, {
            "loss": term + self.alpha * nll,
            "kto_loss": term,
            "nll_loss": nll,
            "kl": kl,
            "desirable_fraction": desirable.float().mean(),
            "desirable_reward": rewards[desirable].mean() if has else term.new_zeros(()),
            "undesirable_reward": rewards[~desirable].mean() if (~desirable).any() else term.new_zeros(()),
            "chosen_logps": policy.chosen.mean(),
        }


def _rewards_by_prompt(data: TrainingData) -> tuple[list[dict], list[list[dict]]]:
    """Every sample, in (prompt, sample) order, and the same rows grouped by prompt."""
    rows = sorted(data.samples(), key=lambda r: (r["prompt_id"], r.get("sample", 0)))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["prompt_id"], []).append(r)
    return rows, list(groups.values())


@dataclass
class PolicyGradient(Method):
    """A verifiable-reward policy gradient on every sample of every prompt (not on pairs): the
    advantage of a sample is computed from its prompt's N rewards (binary or graded) and is
    the item's label; a prompt whose N rewards are all equal has advantage 0 for every sample
    (it still counts in the loss's normalizer, and in the KL term when beta_kl > 0, as in TRL).
    The sampling policy π_old is M_t, the reference too: the reference pass stores M_t's
    per-token log-probs at the iteration's sampling temperature once, and training scores the
    policy at that temperature, so at a step's first update the ratio is 1 (irpo.loss)."""

    epsilon: float = 0.2  # the clip's lower side, 1 − ε (TRL's default)
    epsilon_high: Optional[float] = None  # its upper side, 1 + ε_high; None: epsilon (DAPO: 0.28)
    beta_kl: float = 0.0  # weight of the k3 KL term to the reference M_t (TRL's default 0)

    reference: ClassVar[bool] = True  # M_t's log-probs: the sampling policy's and the reference's
    from_pairs: ClassVar[bool] = False
    token_level: ClassVar[bool] = True
    items_name: ClassVar[str] = "samples"

    def __post_init__(self) -> None:
        if self.epsilon_high is None:
            self.epsilon_high = self.epsilon
        if not 0 < self.epsilon < 1 or self.epsilon_high <= 0:
            raise ConfigError(
                f"epsilon must be in (0, 1) and epsilon_high > 0, got {self.epsilon} and {self.epsilon_high}"
            )
        if self.beta_kl < 0:
            raise ConfigError(f"beta_kl must be >= 0, got {self.beta_kl}")

    def advantages(self, rewards: torch.Tensor):
        """irpo.loss.GroupAdvantages of rewards [P, N]."""
        raise NotImplementedError

    def items(self, data: TrainingData) -> Items:
        import torch

        rows, groups = _rewards_by_prompt(data)
        labels: list[float] = []
        for group in groups:  # a prompt's N samples (every prompt has N: one group at a time)
            rewards = torch.tensor([[float(r["reward"]) for r in group]], dtype=torch.float64)
            labels += self.advantages(rewards).advantages[0].tolist()
        return Items([r["prompt"] for r in rows], [r["completion"] for r in rows], None, labels)

    def items_per_prompt(self, num_samples: int, pairs_per_prompt: int) -> int:
        return num_samples

    def metrics(self, parts, mask: torch.Tensor, advantages: torch.Tensor) -> dict[str, torch.Tensor]:
        """What a step logs of the ratio: the fractions of tokens clipped low and high, the mean
        ratio, its largest distance from 1, and the KL estimate to the reference, over the
        micro-batch's tokens (its sequences, for a sequence-level ratio)."""
        mask = mask.bool()
        n = mask.sum().clamp(min=1)
        return {
            "clip_low": parts.low_clipped.sum() / n,
            "clip_high": parts.high_clipped.sum() / n,
            "ratio": parts.ratio[mask].sum() / n,
            "ratio_deviation": (parts.ratio[mask] - 1).abs().max() if mask.any() else n.new_zeros(()).float(),
            "kl": parts.kl[mask].sum() / n,
            "advantage_abs": advantages.abs().mean(),
        }


@dataclass
class GRPO(PolicyGradient):
    """GRPO (Shao et al. 2024, DeepSeekMath, Eqs. 3 and 4): the per-token clipped ratio with
    group-normalised advantages (r − mean)/std, averaged per sequence then over sequences
    (aggregation="sequence"; "token" is DAPO's token mean, "constant" Dr. GRPO's). One
    iteration is one rollout batch from M_t, then trainer.max_steps updates against it."""

    aggregation: str = "sequence"  # sequence, token or constant
    scale_rewards: bool = True  # divide by the group's reward std (False: Dr. GRPO's advantage)
    # "constant": the normalizer, the most tokens a completion may have (TRL: max_completion_length)
    constant: float = 512.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.aggregation not in ("sequence", "token", "constant"):
            raise ConfigError(f"aggregation must be one of sequence, token, constant; got {self.aggregation!r}")
        if self.constant <= 0:
            raise ConfigError(f"constant must be > 0, got {self.constant}")

    @property
    def token_mean(self) -> bool:
        return self.aggregation == "token"

    def advantages(self, rewards: torch.Tensor):
        from irpo.loss import group_advantages

        return group_advantages(rewards, self.scale_rewards)

    def objective(
        self, policy: BatchLogps, reference: BatchLogps | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from irpo.loss import aggregate, clipped_ratio_loss

        mask = policy.token_mask
        parts = clipped_ratio_loss(
            policy.token_logps,
            reference.token_logps,
            policy.labels,
            mask,
            self.epsilon,
            self.epsilon_high,
            self.beta_kl,
        )
        loss = aggregate(parts.per_token, mask, self.aggregation, self.constant)
        return loss, {"loss": loss, **self.metrics(parts, mask, policy.labels), "chosen_logps": policy.chosen.mean()}


@dataclass
class DrGRPO(GRPO):
    """Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training", Sec. 3.1): GRPO without
    its two length and difficulty biases, advantage r − mean (no std) and each sequence's
    summed token losses over a constant (the most new tokens a completion may have) instead of
    its own length."""

    aggregation: str = "constant"
    scale_rewards: bool = False


@dataclass
class RLOO(PolicyGradient):
    """RLOO (Ahmadian et al. 2024, "Back to Basics", Sec. 3.2): REINFORCE with each sample's
    baseline the mean reward of its prompt's other samples, the whole completion one action:
    one clipped ratio per sequence of summed log-probs, mean over sequences (TRL 1.16's
    RLOOTrainer). TRL puts its KL to the reference into the reward, from the sampling policy's
    log-probs, log π_old − log π_ref: here π_old is the reference M_t, so that penalty is 0 and
    RLOO takes no beta_kl."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta_kl:
            raise ConfigError("beta_kl: RLOO's KL penalty is log π_old − log π_ref, 0 when M_t samples; leave it 0")

    def advantages(self, rewards: torch.Tensor):
        from irpo.loss import leave_one_out_advantages

        return leave_one_out_advantages(rewards)

    def objective(
        self, policy: BatchLogps, reference: BatchLogps | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        import torch

        from irpo.loss import sequence_ratio_loss

        parts = sequence_ratio_loss(policy.chosen, reference.chosen, policy.labels, self.epsilon, self.epsilon_high)
        loss = parts.per_token.mean()
        mask = torch.ones_like(parts.ratio, dtype=torch.bool)
        return loss, {"loss": loss, **self.metrics(parts, mask, policy.labels), "chosen_logps": policy.chosen.mean()}


def build(cfg) -> Method:
    """The Method a run's config describes (its `method` node; a node recorded by an earlier
    irpo is read through irpo.run.compat first). A wrong key, type or value is a ConfigError
    naming it."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    fields = method_fields(cfg)
    target = fields.pop("_target_")
    cls = _locate(target)
    try:
        typed = OmegaConf.merge(OmegaConf.structured(cls), fields)
        return OmegaConf.to_object(typed)
    except OmegaConfBaseException as exc:
        key = f"method.{exc.full_key}" if getattr(exc, "full_key", None) else "method"
        raise ConfigError(f"{key}: {str(exc).splitlines()[0]}") from None


def method_fields(cfg) -> dict[str, Any]:
    """A config's `method` node (a DictConfig, resolved, or a dict) as a plain dict."""
    from omegaconf import OmegaConf

    node = cfg["method"]
    return dict(OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node)


def _locate(target: str) -> type[Method]:
    module, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"method._target_={target} cannot be imported: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Method) and dataclasses.is_dataclass(cls)):
        raise ConfigError(f"method._target_={target} is not a dataclass subclassing irpo.methods.Method")
    return cls


def described(method: Method) -> dict[str, Any]:
    """The method as dotted config keys: what a stage that trains depends on (its class and
    every field, defaults included), the same whichever YAML spelled it."""
    cls = type(method)
    return {
        "method._target_": f"{cls.__module__}.{cls.__qualname__}",
        **{f"method.{f.name}": getattr(method, f.name) for f in dataclasses.fields(method)},
    }
