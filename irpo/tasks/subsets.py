"""`task.train_size` / `task.test_size`: a seeded random subset of a split, stratified by
subject where the task has subjects, for quick runs that still measure the whole task.

Data files are often ordered (MATH by subject, others by difficulty or source), so the
first n rows would measure one part of the task. Each example is ranked by a hash of the
seed and its id and question: the draw is the same on every run, every rank, every Python
version, and does not depend on how the rows were read. The drawn examples keep their
file order.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Sequence

from irpo.errors import UserError
from irpo.tasks.base import Example


def subset(examples: Sequence[Example], size: int | None, seed: int) -> list[Example]:
    """`size` of `examples` drawn at random with `seed`, each subject getting its
    proportional share (`allocate`); all of them when `size` is None or not smaller."""
    if size is None or size >= len(examples):
        return list(examples)
    quota = allocate(Counter(ex.subject for ex in examples), size)
    ranked = sorted(range(len(examples)), key=lambda i: (_rank(examples[i], seed), i))
    chosen = []
    for i in ranked:
        subject = examples[i].subject
        if quota[subject] > 0:
            quota[subject] -= 1
            chosen.append(i)
    return [examples[i] for i in sorted(chosen)]


def validation_split(
    task, train: Sequence[Example], size: int, source: str, seed: int
) -> tuple[list[Example], list[Example]]:
    """(train prompts, validation problems) for checkpoint selection: `size` problems drawn as
    `subset` draws (stratified by subject, the same on every run, in file order), held out
    from `train` (source "train") or from the task's own validation split ("validation")."""
    if size == 0:
        return list(train), []
    if source == "validation":
        if "validation" not in getattr(task, "sizes", {}):
            raise UserError(f"task {task.name} has no validation split of its own; use selection.val_from=train")
        pool = task.load("validation")
        if size > len(pool):
            raise UserError(
                f"selection.val_size={size} is more than the {len(pool)} problems of {task.name}'s validation split"
            )
        return list(train), subset(pool, size, seed)
    if size >= len(train):
        raise UserError(
            f"selection.val_size={size} would hold out all {len(train)} train prompts; lower it or raise task.train_size"
        )
    held = subset(train, size, seed)
    ids = {ex.id for ex in held}
    return [ex for ex in train if ex.id not in ids], held


def allocate(counts: dict[str | None, int], size: int) -> dict[str | None, int]:
    """How many of `size` each group gets, proportional to `counts` (the largest-remainder
    method: each group gets the floor of its exact share, and the places left go to the
    largest fractional parts; ties to the group seen first). Needs size <= sum(counts)."""
    total = sum(counts.values())
    exact = {group: size * n / total for group, n in counts.items()}
    quota = {group: int(share) for group, share in exact.items()}
    left = size - sum(quota.values())
    by_remainder = sorted(
        counts, key=lambda group: -(exact[group] - quota[group])
    )  # stable: ties keep first-seen order
    for group in by_remainder[:left]:
        quota[group] += 1
    return quota


def describe(task_cfg, **splits: Sequence[Example]) -> str:
    """`plan=true`'s lines on the data: per split, how it was cut (`task.<split>_size`,
    `task.seed`) and how many of each subject it holds."""
    # .get: a task of the user's own may have neither key
    return "\n".join(
        f"subset     {_describe(split, examples, task_cfg.get(f'{split}_size'), task_cfg.get('seed', 0))}"
        for split, examples in splits.items()
    )


def _describe(split: str, examples: Sequence[Example], size: int | None, seed: int) -> str:
    if size is None:
        how = f"all {len(examples)}"
    elif len(examples) < size:
        how = f"all {len(examples)} (task.{split}_size={size} is more than the split holds)"
    else:
        how = f"{size} drawn at random with task.seed={seed}"
    subjects = Counter(ex.subject for ex in examples)
    if None in subjects:
        return f"{split:<5} {how}"
    return f"{split:<5} {how}, {len(subjects)} subjects: " + ", ".join(f"{s} {n}" for s, n in sorted(subjects.items()))


def _rank(example: Example, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}\0{example.id}\0{example.question}".encode()).digest()
