"""Token layout of training examples and the collator.

A sequence is prompt tokens + completion tokens + EOS; only the completion and its EOS are
scored. A batch of B pairs is one packed row holding each prompt once and both of its
completions (see `collate`); its log-probs come out as 2B values, the B winners first, then the B
losers, so `.chunk(2)` splits them. An SFT batch (no losers) gives the B winners alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from irpo.generation.base import encode_prompts


def encode_completions(tokenizer, completions: Sequence[str]) -> list[list[int]]:
    """Completion tokens followed by EOS: the model learns where a winner ends."""
    ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    return [x + [tokenizer.eos_token_id] for x in ids]


def encode_examples(
    tokenizer, prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str] | None, max_length: int
) -> tuple[list[dict], int]:
    """Token ids of each (prompt, chosen[, rejected]); examples whose longer side exceeds
    max_length are dropped (cutting one would score a different sequence than was sampled).
    Returns the kept examples, each with its index, and how many were dropped."""
    prompt_ids = encode_prompts(tokenizer, prompts)
    chosen_ids = encode_completions(tokenizer, chosen)
    rejected_ids = encode_completions(tokenizer, rejected) if rejected is not None else [None] * len(chosen_ids)
    kept = []
    for i, (p, c, r) in enumerate(zip(prompt_ids, chosen_ids, rejected_ids)):
        if len(p) + max(len(c), len(r or [])) > max_length:
            continue
        kept.append({"index": i, "prompt_ids": p, "chosen_ids": c, "rejected_ids": r})
    return kept, len(prompt_ids) - len(kept)


def packed_tokens(item: dict) -> int:
    """Tokens an item takes in a `collate` row: its prompt once, its completions."""
    return len(item["prompt_ids"]) + len(item["chosen_ids"]) + len(item["rejected_ids"] or [])


def scored_tokens(items: Sequence[dict]) -> int:
    """Tokens `collate` scores for items: every completion token and its EOS (the first one
    from the prompt's last position; with no prompt, it has no predictor)."""
    return sum(
        len(c) - (0 if it["prompt_ids"] else 1) for it in items for c in (it["chosen_ids"], it["rejected_ids"]) if c
    )


def micro_batches(
    items: Sequence[dict], max_items: int | None = None, max_tokens: int | None = None
) -> list[list[dict]]:
    """Items in order, cut into micro-batches of at most max_items items and max_tokens packed
    tokens (an item longer than max_tokens alone): what one forward holds, so activation and
    logits memory is bounded by construction, whatever lengths the samples came out at."""
    groups: list[list[dict]] = []
    tokens = 0
    for item in items:
        n = packed_tokens(item)
        full = groups and ((max_items and len(groups[-1]) >= max_items) or (max_tokens and tokens + n > max_tokens))
        if not groups or full:
            groups.append([])
            tokens = 0
        groups[-1].append(item)
        tokens += n
    return groups


@dataclass(frozen=True)
class MicroBatching:
    """How a rank's share of an optimizer step is cut into forwards."""

    step_items: int  # this rank's items (pairs, or SFT sequences) per optimizer step
    max_items: int  # items per forward
    max_tokens: int | None = None  # packed tokens per forward; None: no bound

    def split(self, items: Sequence[dict]) -> list[list[dict]]:
        return micro_batches(items, self.max_items, self.max_tokens)


def split_to(groups: list[list[dict]], count: int) -> list[list[dict]]:
    """The micro-batches split (the largest in halves, order kept) until there are `count`:
    the ranks of a sharded model run as many forwards, each a collective. Smaller micro-batches
    keep every bound."""
    groups = list(groups)
    while len(groups) < count:
        i = max(range(len(groups)), key=lambda j: len(groups[j]))
        if len(groups[i]) < 2:
            raise ValueError(f"{sum(map(len, groups))} items cannot make {count} micro-batches")
        half = len(groups[i]) // 2
        groups[i : i + 1] = [groups[i][:half], groups[i][half:]]
    return groups


def collate(items: Sequence[dict]) -> dict[str, torch.Tensor]:
    """The micro-batch packed into one row with no padding: per pair [prompt, chosen,
    rejected] (an SFT item [prompt, chosen]), the pairs one after another.

    The prompt is computed once and attended by both completions: segment_ids (0 prompt,
    1 chosen, 2 rejected) let a completion see its pair's prompt and itself only (attention
    runs pair by pair over pair_bounds [P+1] offsets), and the rejected tokens' position ids
    continue from the prompt's end, so each completion is scored exactly as in its own
    [prompt, completion] sequence.

    Scored tokens come flat: score_index is the position whose output predicts score_target,
    score_seq its sequence, winners 0..B-1 then losers B..2B-1. The first token of a
    completion is predicted from the prompt's last position."""
    n_seq = len(items) * (1 if items[0]["rejected_ids"] is None else 2)
    ids, positions, segments, bounds = [], [], [], [0]
    index, target, seq = [], [], []
    for i, it in enumerate(items):
        base, p = bounds[-1], len(it["prompt_ids"])
        ids += it["prompt_ids"]
        positions += range(p)
        segments += [0] * p
        for side, completion in enumerate([it["chosen_ids"], it["rejected_ids"]]):
            if completion is None:
                continue
            start, n = len(ids), len(completion)
            ids += completion
            positions += range(p, p + n)
            segments += [side + 1] * n
            # predictors: the prompt's last position, then the completion's own positions
            sources = [base + p - 1] + list(range(start, start + n - 1))
            keep = slice(0 if p > 0 else 1, None)  # with no prompt the first token has no predictor
            index += sources[keep]
            target += completion[keep]
            seq += [side * len(items) + i] * len(completion[keep])
        bounds.append(len(ids))
    batch = {
        "input_ids": torch.tensor([ids]),
        "position_ids": torch.tensor([positions]),
        "segment_ids": torch.tensor([segments]),
        "pair_bounds": torch.tensor(bounds),
        "score_index": torch.tensor(index, dtype=torch.long),
        "score_target": torch.tensor(target, dtype=torch.long),
        "score_seq": torch.tensor(seq, dtype=torch.long),
        "n_seq": torch.tensor(n_seq),
        "index": torch.tensor([it["index"] for it in items]),
    }
    if "label" in items[0]:
        batch["label"] = torch.tensor([it["label"] for it in items], dtype=torch.float32)
    if "ref_tokens" in items[0]:  # M_t's per-token table, in score order (unpaired items)
        batch["ref_tokens"] = torch.cat([it["ref_tokens"] for it in items]).float()
    if "ref_chosen" in items[0]:
        batch["ref_chosen"] = torch.tensor([it["ref_chosen"] for it in items], dtype=torch.float32)
        batch["ref_rejected"] = torch.tensor([it["ref_rejected"] for it in items], dtype=torch.float32)
    return batch


def pair_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens of a `collate` batch counted as a plain step feeds them: the prompt once per
    sequence (twice per pair), the completions once. Throughput is reported in these."""
    seg = batch["segment_ids"]
    per_item = int(batch["n_seq"]) // len(batch["index"])
    return int((seg > 0).sum()) + int((seg == 0).sum()) * per_item
