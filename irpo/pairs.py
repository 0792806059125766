"""Rewarded samples → (winner, loser) pairs: the paper's pair rule, as pure functions.

Sec. 2 of Pang et al. (2024): split a prompt's N samples into correct (winners, G^w) and
incorrect (losers, G^l); "iterate over both sets at once, cycling back to the start of a
set when it runs out" to make K pairs; a prompt with an empty set is skipped (footnote 2).
For GSM8K the gold CoT joins the winners when no sample is correct (Sec. 3.1).

Rewards may be graded, in [0, 1] (partial credit, a verifier's score): a winner is a correct
sample (reward 1), a loser one whose reward is below 1 by at least `margin`; with binary
rewards and margin 0 this is the paper's split.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Iterable, Sequence

from irpo.tasks.base import correct


@dataclass(frozen=True)
class PairRule:
    """How an iteration's samples become pairs: K pairs per prompt at most, a cap on the
    iteration's pairs (footnote 4), the gold CoT as the winner of a prompt with no correct
    sample (GSM8K), and the reward margin a loser must trail the winner by."""

    per_prompt: int
    max_pairs: int | None = None
    gold_winner: bool = False
    margin: float = 0.0


@dataclass(frozen=True)
class Pair:
    prompt_id: str
    prompt: str
    chosen: str
    rejected: str
    chosen_is_gold: bool = False


def cycle_pairs(num_winners: int, num_losers: int, k: int) -> list[tuple[int, int]]:
    """Up to k distinct (winner index, loser index) pairs, walking both lists at once.

    Step i pairs winner i mod |W| with loser (i + s) mod |L|. With s = 0 this is the paper's
    simultaneous cycling; it repeats itself after lcm(|W|, |L|) steps, so each further
    block shifts the losers by one (s = 0 .. gcd - 1), which reaches every one of the
    |W|·|L| pairs exactly once before any repeats. Every winner and every loser is used
    as evenly as k allows.
    """
    if num_winners == 0 or num_losers == 0 or k <= 0:
        return []
    block = math.lcm(num_winners, num_losers)
    out: list[tuple[int, int]] = []
    for shift in range(math.gcd(num_winners, num_losers)):
        for i in range(block):
            if len(out) == k:
                return out
            out.append((i % num_winners, (i + shift) % num_losers))
    return out


def _unique(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def prompt_pairs(
    prompt_id: str,
    prompt: str,
    completions: Sequence[str],
    rewards: Sequence[float],
    k: int,
    seed: int,
    gold: str | None = None,
    margin: float = 0.0,
) -> list[Pair]:
    """Pairs for one prompt. Identical completions count once (a repeated string would
    only repeat a pair). The order within each set is shuffled by a generator seeded by
    (seed, prompt_id), so the pairs of a prompt do not depend on which other prompts exist."""
    winners = _unique(c for c, r in zip(completions, rewards) if correct(r))
    losers = _unique(c for c, r in zip(completions, rewards) if not correct(r) and r <= 1 - margin)
    from_gold = not winners and gold is not None
    if from_gold:
        winners = [gold]
    rng = random.Random(f"{seed}/{prompt_id}")
    rng.shuffle(winners)
    rng.shuffle(losers)
    return [
        Pair(prompt_id, prompt, winners[w], losers[l], chosen_is_gold=from_gold)
        for w, l in cycle_pairs(len(winners), len(losers), k)
    ]


def cap_pairs(pairs: list[Pair], max_pairs: int | None, seed: int) -> list[Pair]:
    """At most max_pairs pairs, chosen at random (paper footnote 4: ~60k when more);
    the survivors keep their original order."""
    if max_pairs is None or len(pairs) <= max_pairs:
        return pairs
    keep = sorted(random.Random(f"{seed}/cap").sample(range(len(pairs)), max_pairs))
    return [pairs[i] for i in keep]


def pair_stats(rewards_per_prompt: Sequence[Sequence[float]], pairs: Sequence[Pair]) -> dict[str, float]:
    """The iteration's data numbers: pass@N, mean reward, why prompts gave no pairs."""
    n_prompts = len(rewards_per_prompt)
    any_right = [any(map(correct, rs)) for rs in rewards_per_prompt]
    all_right = [bool(rs) and all(map(correct, rs)) for rs in rewards_per_prompt]
    samples = sum(len(rs) for rs in rewards_per_prompt)
    return {
        "prompts": n_prompts,
        "samples": samples,
        "train_pass_at_n": sum(any_right) / max(n_prompts, 1),
        "train_mean_reward": sum(sum(rs) for rs in rewards_per_prompt) / max(samples, 1),
        "prompts_no_winner": sum(not a for a in any_right),
        "prompts_no_loser": sum(all_right),
        # every sample rewarded alike: no pair, and zero advantage under a policy gradient
        "prompts_all_equal": sum(len(set(rs)) <= 1 for rs in rewards_per_prompt),
        "prompts_with_pairs": len({p.prompt_id for p in pairs}),
        "pairs": len(pairs),
        "gold_winner_pairs": sum(p.chosen_is_gold for p in pairs),
    }
