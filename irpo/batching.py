"""Token layout of training examples and the collator.

A sequence is prompt tokens + completion tokens + EOS; only the completion and its EOS are
scored. A batch of B pairs is B rows, each holding the prompt once and both completions
(see `collate`); its log-probs come out as 2B values, the B winners first, then the B
losers, so `.chunk(2)` splits them. An SFT batch (no losers) gives the B winners alone.
"""

from __future__ import annotations

from typing import Sequence

import torch

from irpo.generation.base import encode_prompts


def encode_completions(tokenizer, completions: Sequence[str]) -> list[list[int]]:
    """Completion tokens followed by EOS: the model learns where a winner ends."""
    ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    return [x + [tokenizer.eos_token_id] for x in ids]


def encode_examples(tokenizer, prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str] | None, max_length: int) -> tuple[list[dict], int]:
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


def collate(items: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """One row per pair, [prompt, chosen, rejected], right padded to the batch's longest row.

    The prompt is computed once and attended by both completions: segment_ids (0 prompt,
    1 chosen, 2 rejected, -1 padding) let a completion see the prompt and itself only, and
    the rejected tokens' position ids continue from the prompt's end, so each completion is
    scored exactly as in its own [prompt, completion] sequence. An SFT row is [prompt, chosen].

    Scored tokens come flat: score_index (into the flattened [B·T] positions) is the position
    whose output predicts score_target, and score_seq its sequence, winners 0..B-1 then losers
    B..2B-1. The first token of a completion is predicted from the prompt's last position."""
    n_seq = len(items) * (1 if items[0]["rejected_ids"] is None else 2)
    width = max(len(it["prompt_ids"]) + len(it["chosen_ids"]) + len(it["rejected_ids"] or []) for it in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(items), width), dtype=torch.long)
    segment_ids = torch.full((len(items), width), -1, dtype=torch.long)
    index, target, seq = [], [], []
    for i, it in enumerate(items):
        p = len(it["prompt_ids"])
        start = p
        for side, completion in enumerate([it["chosen_ids"], it["rejected_ids"]]):
            if completion is None:
                continue
            n = len(completion)
            input_ids[i, :p] = torch.tensor(it["prompt_ids"])
            input_ids[i, start : start + n] = torch.tensor(completion)
            position_ids[i, :p] = torch.arange(p)
            position_ids[i, start : start + n] = torch.arange(p, p + n)
            segment_ids[i, :p] = 0
            segment_ids[i, start : start + n] = side + 1
            # predictors: the prompt's last position, then the completion's own positions
            sources = [p - 1] + list(range(start, start + n - 1))
            keep = slice(0 if p > 0 else 1, None)  # with no prompt the first token has no predictor
            index += [i * width + s for s in sources[keep]]
            target += completion[keep]
            seq += [side * len(items) + i] * len(completion[keep])
            start += n
    batch = {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "segment_ids": segment_ids,
        "score_index": torch.tensor(index, dtype=torch.long),
        "score_target": torch.tensor(target, dtype=torch.long),
        "score_seq": torch.tensor(seq, dtype=torch.long),
        "n_seq": torch.tensor(n_seq),
        "index": torch.tensor([it["index"] for it in items]),
    }
    if "ref_chosen" in items[0]:
        batch["ref_chosen"] = torch.tensor([it["ref_chosen"] for it in items], dtype=torch.float32)
        batch["ref_rejected"] = torch.tensor([it["ref_rejected"] for it in items], dtype=torch.float32)
    return batch


def pair_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens of a `collate` batch counted as a plain step feeds them: the prompt once per
    sequence (twice per pair), the completions once. Throughput is reported in these."""
    seg = batch["segment_ids"]
    return int((seg > 0).sum()) + int((seg == 0).sum()) * (int(batch["n_seq"]) // len(seg))
