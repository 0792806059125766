"""Token layout of training examples and the collator.

A row is prompt tokens + completion tokens + EOS; only the completion and its EOS are
scored (a boolean mask, never an ignore index). A batch of B pairs is 2B rows: the B
winners first, then the B losers, so one forward serves both and `.chunk(2)` splits them.
An SFT batch (no losers) is the B winners alone.
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
    """[2B, T] input_ids / attention_mask / completion_mask (winners then losers), right
    padded to the batch's longest row; reference log-probs [B] when the items carry them."""
    rows = [(it["prompt_ids"], it["chosen_ids"]) for it in items]
    if items[0]["rejected_ids"] is not None:
        rows += [(it["prompt_ids"], it["rejected_ids"]) for it in items]
    width = max(len(p) + len(c) for p, c in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    completion = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (p, c) in enumerate(rows):
        n = len(p) + len(c)
        input_ids[i, :n] = torch.tensor(p + c)
        attention[i, :n] = 1
        completion[i, len(p) : n] = True
    batch = {"input_ids": input_ids, "attention_mask": attention, "completion_mask": completion, "index": torch.tensor([it["index"] for it in items])}
    if "ref_chosen" in items[0]:
        batch["ref_chosen"] = torch.tensor([it["ref_chosen"] for it in items], dtype=torch.float32)
        batch["ref_rejected"] = torch.tensor([it["ref_rejected"] for it in items], dtype=torch.float32)
    return batch
