"""The Task interface: data, prompt, answer extraction and checking for one benchmark.

A task is built from its config without reading data (so `dry_run` and config errors are
cheap); `load(split)` reads it. The reward of a completion is 1 when
`is_correct(extract_answer(completion), example.answer)`, else the task's partial credit in
[0, 1) where it gives one (`partial_credit(completion, example)`, optional), else 0; it
never raises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Example:
    """One problem: the gold final answer as a string, the gold chain of thought if any."""

    id: str
    question: str
    answer: str
    solution: str | None = None
    choices: tuple[tuple[str, str], ...] = field(default=())  # (label, text), where the task has them
    subject: str | None = None  # where the task has subjects (MATH): subsets are stratified by it


@runtime_checkable
class Task(Protocol):
    name: str
    stop: tuple[str, ...]  # strings that end a completion (kept in it); () = end of sequence only
    max_new_tokens: int  # the generation limit this task's answers need

    def load(self, split: str) -> list[Example]: ...

    def prompt(self, example: Example) -> str | Messages: ...

    def extract_answer(self, completion: str) -> str | None: ...

    def is_correct(self, answer: str | None, gold: str) -> bool: ...

    def gold_completion(self, example: Example) -> str | None:
        """The gold CoT written in the task's answer format (a winner when no sample is correct)."""
        ...


def check(task: Task, answer: str | None, gold: str) -> float:
    """1.0 if `answer` matches `gold`; a checker that raises on odd input scores 0."""
    try:
        return float(answer is not None and task.is_correct(answer, gold))
    except Exception:  # noqa: BLE001 - a malformed model output must never stop a run
        return 0.0


# The most partial credit can be: below the full reward of a correct answer.
BELOW_CORRECT = 0.999


def correct(reward: float) -> bool:
    """A completion that earned the full reward (partial credit stays below 1)."""
    return reward >= 1


def reward(task: Task, completion: str, example: Example) -> tuple[str | None, float]:
    """(extracted answer, r in [0, 1]): 1 for a correct answer, else the task's partial credit
    if it gives one; never raises."""
    try:
        answer = task.extract_answer(completion)
    except Exception:  # noqa: BLE001 - as in check()
        answer = None
    r = check(task, answer, example.answer) if answer is not None else 0.0
    partial = getattr(task, "partial_credit", None)
    if r < 1 and partial is not None:
        try:
            r = min(max(float(partial(completion, example)), 0.0), BELOW_CORRECT)
        except Exception:  # noqa: BLE001 - as in check()
            r = 0.0
    return answer, r
