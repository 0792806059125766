"""`arc`: ARC-Challenge multiple-choice science questions (Clark et al. 2018), the paper's
Sec. 3.2.

Zero-shot prompt with the options listed as (A)...(E); the answer is a letter, exact match.
The paper trains on the train questions of ARC-Challenge *and* ARC-Easy (7.7k, PAPER.md §2
"Train data"): `include_easy=True` adds ARC-Easy's train split to `load("train")`. There is
no gold chain of thought, so a question with no correct sample is dropped (no gold winner).

Rows come in AI2's original nested format (`question.stem`, `question.choices[*]`) or the
hub's flat one (`question`, `choices.text/label`). A few questions are labelled 1-4 instead
of A-D (the NYSEDREGENTS ones); they are shown and scored as A-D, so that every prompt
matches its instruction, "Final answer: (insert letter here)".
"""

from __future__ import annotations

import re
from pathlib import Path

from irpo.errors import UserError
from irpo.tasks import loading
from irpo.tasks.answers import FINAL_ANSWER, STOP, anchor, answer_lines, instruction
from irpo.tasks.base import Example
from irpo.tasks.schemas import ARCTaskConfig
from irpo.tasks.subsets import subset

HUB_ID = "allenai/ai2_arc"
_ANSWER = anchor(r"\banswer(?:\s+is)?")  # "Answer: B", "the correct answer is (B)"
_WRAPPER = re.compile(r"\\(?:boxed|text|textbf|mathrm)\{([^{}]*)\}")  # "\boxed{B}" -> "B"
_LABEL = "[A-Ea-e1-5]"
# "(B)" anywhere on the answer line, else a label at its start: an upper-case letter not
# followed by a letter or digit ("B", "B) air", "B. air"); a lower-case letter or a digit
# only alone or before ")" "." ":" ("b", "b)"), so that "a ball" is not option A.
_IN_PARENS = re.compile(rf"\(({_LABEL})\)")
_AT_START = re.compile(r"(?:[Oo]ption|[Cc]hoice)?\s*([A-E](?![A-Za-z0-9])|[a-e1-5](?=[).:\]]|\s*$))")
_BARE = re.compile(rf"\(?({_LABEL})\)?\.?")


def letter(label: str) -> str:
    """The canonical label: "b" -> "B", "2" -> "B"."""
    return chr(ord("A") + int(label) - 1) if label.isdigit() else label.upper()


def label_in(line: str) -> str | None:
    """The option a model's answer line names, as a letter; None if it names none."""
    line = _WRAPPER.sub(r"\1", line).strip(" \t*$")
    found = _IN_PARENS.search(line) or _AT_START.match(line)
    return letter(found.group(1)) if found else None


class ARCTask:
    name = "arc"
    stop = STOP

    def __init__(
        self,
        data_path: str | None = ARCTaskConfig.data_path,
        include_easy: bool = ARCTaskConfig.include_easy,
        train_size: int | None = ARCTaskConfig.train_size,
        test_size: int | None = ARCTaskConfig.test_size,
        max_new_tokens: int = ARCTaskConfig.max_new_tokens,
        seed: int = ARCTaskConfig.seed,
    ) -> None:
        self.data_path, self.include_easy, self.max_new_tokens = data_path, include_easy, max_new_tokens
        self.seed = seed
        self.sizes = {"train": train_size, "validation": None, "test": test_size}

    def load(self, split: str) -> list[Example]:
        if split not in self.sizes:
            raise ValueError(f"arc has splits {sorted(self.sizes)}, not {split!r}")
        found = loading.rows(self.data_path, split, HUB_ID, ("ARC-Challenge",))
        if split == "train" and self.include_easy:
            if self.data_path is not None and Path(self.data_path).is_file():
                raise UserError(
                    f"{self.data_path}: task.include_easy needs task.data_path to be a directory with easy_train.jsonl"
                )
            found += loading.rows(self.data_path, "easy_train", HUB_ID, ("ARC-Easy",), hub_split="train")
        return subset([_example(row) for row in found], self.sizes[split], self.seed)

    def prompt(self, example: Example) -> str:
        # Sec. 3.2: the GSM8K instruction ending "Final answer: (insert letter here)", 0-shot,
        # the options listed as (A)...(D).
        options = "".join(f"\n({label}) {text}" for label, text in example.choices)
        return f"{instruction('(insert letter here)')}\nQuestion: {example.question}{options}\nSolution:"

    def gold_completion(self, example: Example) -> None:
        return None  # ARC has answer keys only, no reasoning to imitate

    def extract_answer(self, completion: str) -> str | None:
        # "Final answer:" lines first (the format asked for), then any "answer" line, then a
        # completion that is nothing but a label ("B", "(b)").
        for line in answer_lines(completion, FINAL_ANSWER) + answer_lines(completion, _ANSWER):
            found = label_in(line)
            if found is not None:
                return found
        bare = _BARE.fullmatch(completion.strip())
        return letter(bare.group(1)) if bare else None

    def is_correct(self, answer: str | None, gold: str) -> bool:
        return answer is not None and label_in(answer) == letter(gold)


def _example(row: loading.Row) -> Example:
    if isinstance(row.get("question", kind=(str, dict)), dict):  # AI2's nested format
        stem, choices = row.get("question", "stem"), row.get("question", "choices", kind=list)
        if not all(isinstance(c, dict) and isinstance(c.get("text"), str) for c in choices):
            row.fail("each of question.choices needs a text and a label")
        labels, texts = [c.get("label") for c in choices], [c["text"] for c in choices]
    else:  # the hub's flat format
        stem, labels, texts = (
            row.get("question"),
            row.get("choices", "label", kind=list),
            row.get("choices", "text", kind=list),
        )
        if len(labels) != len(texts) or not all(isinstance(t, str) for t in texts):
            row.fail("choices needs one text (a string) per label")
    options = tuple((_label(row, label), text) for label, text in zip(labels, texts))
    answer = _label(row, row.get("answerKey"))
    if answer not in {label for label, _ in options}:
        row.fail(f"answerKey {row.get('answerKey')!r} is not one of the choices' labels")
    return Example(id=row.get("id"), question=stem.strip(), answer=answer, choices=options)


def _label(row: loading.Row, label: object) -> str:
    if not isinstance(label, str) or not re.fullmatch(_LABEL, label.strip()):
        row.fail(f"option label {label!r} is not one of A-E or 1-5")
    return letter(label.strip())
