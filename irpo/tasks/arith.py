"""`arith`: procedurally generated multi-step integer arithmetic, the built-in task.

Each problem chains `num_terms` operands with + and - (and * if enabled); the gold chain of
thought evaluates it left to right one step at a time and ends with the same
"Final answer: N" line the paper asks of GSM8K (Sec. 3.1), so the reward path is the one the
real tasks use. Splits are drawn from disjoint seeded streams and never share a question,
nor one that an M_0 shipped in `irpo.models` was fine-tuned on (its BUILD.json records the
draw, `sft_problems` regenerates it), whatever the split sizes.
"""

from __future__ import annotations

import functools
import json
import operator
import random
import re
from importlib.resources import files

from irpo.tasks.base import Example
from irpo.tasks.schemas import ArithTaskConfig

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
# The test set an M_0's fine-tuning draw skips (irpo/tiny_m0.py draws its problems from the
# train stream of a task with this test size): part of the rule that regenerates the draw.
M0_TEST_SIZE = 200
_FINAL = re.compile(r"Final answer:\s*(-?\d+)")


class ArithTask:
    name = "arith"
    stop = ()  # a completion ends with the model's EOS, after the answer line's newline

    def __init__(
        self,
        train_size: int = ArithTaskConfig.train_size,
        test_size: int = ArithTaskConfig.test_size,
        num_terms: int = ArithTaskConfig.num_terms,
        max_operand: int = ArithTaskConfig.max_operand,
        operators: str = ArithTaskConfig.operators,
        seed: int = ArithTaskConfig.seed,
        max_new_tokens: int = ArithTaskConfig.max_new_tokens,
        validation_size: int = ArithTaskConfig.validation_size,
        step_credit: float | None = ArithTaskConfig.step_credit,
        unseen_by: str | None = ArithTaskConfig.unseen_by,
    ) -> None:
        if num_terms < 2:
            raise ValueError(f"task.num_terms must be >= 2, got {num_terms}")
        if max_operand < 1:
            raise ValueError(f"task.max_operand must be >= 1, got {max_operand}")
        if not operators or set(operators) - set(_OPS):
            raise ValueError(f"task.operators must be drawn from '+-*', got {operators!r}")
        step_credit = step_credit or 0.0
        if not 0 <= step_credit < 1:
            raise ValueError(f"task.step_credit must be in [0, 1), got {step_credit}")
        # train_size / test_size are how many problems to generate, not a draw from a larger
        # pool (irpo/tasks/subsets.py): the generated stream is already a seeded random
        # sample, and a pool to draw from would change the default run's data and with it
        # the accuracies README reports.
        self.sizes = {"train": train_size, "validation": validation_size, "test": test_size}
        self.max_new_tokens = max_new_tokens
        self.num_terms, self.max_operand, self.operators, self.seed = num_terms, max_operand, operators, seed
        self.step_credit = step_credit
        self.unseen_by = unseen_by

    def load(self, split: str) -> list[Example]:
        if split not in self.sizes:
            raise ValueError(f"arith has splits {sorted(self.sizes)}, not {split!r}")
        dirs = shipped_m0_dirs() + ((self.unseen_by,) if self.unseen_by else ())
        tuned = frozenset(q for d in dirs for q in sft_questions(d) if self._could_draw(q))
        return self._splits(tuned, split)

    def _could_draw(self, question: str) -> bool:
        parts = re.split(r"([-+*])", question)
        terms, ops = parts[::2], parts[1::2]
        return (
            len(terms) == self.num_terms
            and set(ops) <= set(self.operators)
            and all(int(t) <= self.max_operand for t in terms)
        )

    def _splits(self, tuned: frozenset[str], upto: str) -> list[Example]:
        """Split `upto`, drawn after the splits it must avoid: test, then train (the loop's
        prompts), then validation, each skipping the earlier ones' questions and `tuned`."""
        drawn, exclude = [], set(tuned)
        for split in ("test", "train", "validation"):
            drawn = self._draw(random.Random(f"{self.seed}/{split}"), self.sizes[split], exclude)
            if split == upto:
                return drawn
            exclude |= {e.question for e in drawn}
        raise AssertionError(upto)

    def _draw(self, rng: random.Random, size: int, exclude: set[str]) -> list[Example]:
        examples, seen = [], set(exclude)
        space = (self.max_operand + 1) ** self.num_terms * len(self.operators) ** (self.num_terms - 1)
        if size + len(exclude) > space:
            raise ValueError(
                f"arith can make only {space} distinct problems with these knobs, asked {size + len(exclude)}"
            )
        while len(examples) < size:
            terms = [rng.randint(0, self.max_operand) for _ in range(self.num_terms)]
            ops = [rng.choice(self.operators) for _ in range(self.num_terms - 1)]
            question = str(terms[0]) + "".join(f"{op}{t}" for op, t in zip(ops, terms[1:]))
            if question in seen:
                continue
            seen.add(question)
            steps, value = [], terms[0]
            for op, t in zip(ops, terms[1:]):
                new = _OPS[op](value, t)
                steps.append(f"{value}{op}{t}={new}")
                value = new
            examples.append(
                Example(id=f"{len(examples)}", question=question, answer=str(value), solution=", ".join(steps))
            )
        return examples

    def prompt(self, example: Example) -> str:
        return f"Q: {example.question}\nA:"

    def gold_completion(self, example: Example) -> str:
        return f" {example.solution}. Final answer: {example.answer}\n"

    def extract_answer(self, completion: str) -> str | None:
        # The last "Final answer" wins: a model may restate intermediate results before it.
        found = _FINAL.findall(completion)
        return found[-1] if found else None

    def is_correct(self, answer: str | None, gold: str) -> bool:
        return answer is not None and int(answer) == int(gold)

    def partial_credit(self, completion: str, example: Example) -> float:
        """A wrong answer's reward: step_credit times the share of the gold chain's steps the
        completion got right before its first wrong one (0 while step_credit is 0, the
        binary reward)."""
        right, total = steps_right(completion, example)
        return self.step_credit * right / total


def sft_problems(record: dict) -> list[Example]:
    """The problems an M_0 was fine-tuned on, from the BUILD.json irpo/tiny_m0.py wrote: the
    recorded task's train-stream draws [first_problem, first_problem + problems), the stream
    skipping an M0_TEST_SIZE test set and nothing else (the build's own draw, and the rule
    arith's splits use to leave them out)."""
    s = record["settings"]
    task = ArithTask(train_size=s["first_problem"] + s["problems"], test_size=M0_TEST_SIZE, **record["task"])
    return task._splits(frozenset(), "train")[s["first_problem"] :]


def shipped_m0_dirs() -> tuple[str, ...]:
    """The M_0 directories in irpo.models fine-tuned on arith (their BUILD.json says so)."""
    root = files("irpo.models")
    return tuple(sorted(str(d) for d in root.iterdir() if (d / "BUILD.json").is_file()))


@functools.lru_cache(maxsize=16)
def sft_questions(model_dir: str) -> frozenset[str]:
    """The questions of `sft_problems` for the M_0 in model_dir; none where it has no arith
    BUILD.json (a model irpo did not build, or a hub id)."""
    try:
        with open(f"{model_dir}/BUILD.json") as f:
            record = json.load(f)
    except (FileNotFoundError, NotADirectoryError):
        return frozenset()
    return (
        frozenset(e.question for e in sft_problems(record)) if "problems" in record.get("settings", {}) else frozenset()
    )


_STEP = re.compile(r"(-?\d+)\s*([-+*])\s*(-?\d+)\s*=\s*(-?\d+)")


def steps_right(completion: str, example: Example) -> tuple[int, int]:
    """(steps of the gold chain the completion gets right in order, before its first wrong
    or missing one; the gold chain's step count). A step is "a op b = c": right when it is
    the gold chain's step, result included. A completion whose final answer is right with
    fewer than all steps right reached it through a wrong step."""
    gold = [m.groups() for m in _STEP.finditer(example.solution or "")]
    made = [m.groups() for m in _STEP.finditer(completion)]
    right = 0
    for want, got in zip(gold, made):
        if tuple(map(str.strip, got)) != want or int(got[3]) != _OPS[got[1]](int(got[0]), int(got[2])):
            break
        right += 1
    return right, max(len(gold), 1)
