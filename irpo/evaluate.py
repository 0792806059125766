"""Test-split evaluation of M_t: greedy accuracy and majority vote over k samples (maj@k)."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from irpo.generation.base import Generator
from irpo.tasks.base import Example, Task, check, correct, reward


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most frequent extracted answer; unanswered samples do not vote. Ties go to the
    answer that appeared first, so the vote never depends on hashing or set order."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    first = {}
    for i, a in enumerate(answers):
        first.setdefault(a, i)
    return max(counts, key=lambda a: (counts[a], -first[a]))


def evaluate(
    generator: Generator,
    task: Task,
    examples: Sequence[Example],
    prompts: Sequence[str],
    maj_k: int,
    maj_temperature: float,
    seed: int,
) -> list[dict]:
    """One record per test problem: the greedy completion, its answer and reward, and
    (maj_k > 0) the majority answer over maj_k samples and its reward."""
    records = []
    for ex, completion in zip(examples, generator.greedy(prompts)):
        answer, r = reward(task, completion, ex)
        records.append({"prompt_id": ex.id, "gold": ex.answer, "greedy": completion, "answer": answer, "reward": r})
    if maj_k > 0:
        for rec, ex, samples in zip(records, examples, generator.sample(prompts, maj_k, maj_temperature, seed)):
            rec["maj_answer"] = majority_vote([reward(task, s, ex)[0] for s in samples])
            rec["maj_reward"] = check(task, rec["maj_answer"], ex.answer)
    return records


def summarize(records: Sequence[dict], maj_k: int, split: str = "test") -> dict[str, float]:
    """{"<split>_accuracy", "maj@k", "<split>_size"} of evaluate()'s records."""
    n = max(len(records), 1)
    metrics = {f"{split}_accuracy": sum(correct(r["reward"]) for r in records) / n, f"{split}_size": len(records)}
    if maj_k > 0:
        metrics[f"maj@{maj_k}"] = sum(r["maj_reward"] for r in records) / n
    return metrics
