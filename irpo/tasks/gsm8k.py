"""`gsm8k`: grade-school math word problems (Cobbe et al. 2021), the paper's Sec. 3.1.

Zero-shot prompt, answers read from the "Final answer:" line and compared as numbers. The
gold chain of thought is the dataset's solution without its `<<48/2=24>>` calculator
annotations, ending in the same "Final answer: N" line; it is the winner the paper adds
when no sample is correct (`gold_winner`).

Extraction, decided here (the paper gives only "the Final answer: format, exact match"):
- the last "Final answer:" (or the gold's "####") line that holds a number wins;
- on that line, the part after the last "=" ("Final answer: 3 + 5 = 8"), then its first
  number ("Final answer: 18 dollars, 3 more than 15" is 18);
- no final-answer line scores 0, with one exception: a completion that is nothing but a
  number. No fallback to "the last number in the text": that would reward completions that
  ignore the format the prompt asks for, which is what training should teach.
Numbers are compared by value: commas, currency signs, "%", a leading "+" and trailing
zeros ("72.00") do not matter; `extract_answer` returns the canonical form ("1080", "-3.5").
"""

from __future__ import annotations

import re
from decimal import Decimal

from irpo.tasks import loading
from irpo.tasks.answers import FINAL_WORDS, STOP, anchor, answer_lines, instruction
from irpo.tasks.base import Example
from irpo.tasks.schemas import GSM8KTaskConfig
from irpo.tasks.subsets import subset

HUB_ID, HUB_CONFIG = "openai/gsm8k", "main"
_CALCULATOR = re.compile(r"<<[^<>]*>>")
_ANCHOR = anchor(rf"{FINAL_WORDS}|####")  # the gold solutions end in "#### 72"
# A sign, an optional currency sign, then 1,234,567 or 1234567, then decimals: "-$1,080.50".
# ASCII digits only: what Decimal reads, and what the gold answers use.
_NUMBER = re.compile(
    r"([-\u2212+]?)\s*[$\u20ac\u00a3\u00a5\u20b9]?\s*(\d{1,3}(?:,\d{3})+(?!\d)|\d+|(?=\.\d))(\.\d+)?", re.ASCII
)


def number(text: str) -> str | None:
    """The first number in `text`, canonical: "-$1,080.50" -> "-1080.5", "72.00" -> "72"."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    sign, whole, decimals = match.groups()
    value = Decimal((whole or "0").replace(",", "") + (decimals or ""))
    if sign in ("-", "\u2212"):
        value = -value
    text = format(value.normalize(), "f")
    return "0" if value == 0 else text


class GSM8KTask:
    name = "gsm8k"
    stop = STOP

    def __init__(
        self,
        data_path: str | None = GSM8KTaskConfig.data_path,
        train_size: int | None = GSM8KTaskConfig.train_size,
        test_size: int | None = GSM8KTaskConfig.test_size,
        max_new_tokens: int = GSM8KTaskConfig.max_new_tokens,
        seed: int = GSM8KTaskConfig.seed,
    ) -> None:
        self.data_path, self.max_new_tokens = data_path, max_new_tokens
        self.seed = seed
        self.sizes = {"train": train_size, "test": test_size}

    def load(self, split: str) -> list[Example]:
        if split not in self.sizes:
            raise ValueError(f"gsm8k has splits {sorted(self.sizes)}, not {split!r}")
        examples = []
        for i, row in enumerate(loading.rows(self.data_path, split, HUB_ID, (HUB_CONFIG,))):
            solution, sep, final = row.get("answer").rpartition("####")
            answer = number(final)
            if not sep or answer is None:
                row.fail("field 'answer' does not end in a '#### <number>' line")
            solution = _CALCULATOR.sub("", solution).strip()
            examples.append(
                Example(id=f"{split}/{i}", question=row.get("question").strip(), answer=answer, solution=solution)
            )
        return subset(examples, self.sizes[split], self.seed)

    def prompt(self, example: Example) -> str:
        # Sec. 3.1: zero-shot, "Question: [question here]\nSolution:".
        return f"{instruction()}\nQuestion: {example.question}\nSolution:"

    def gold_completion(self, example: Example) -> str:
        return f" {example.solution}\nFinal answer: {example.answer}"

    def extract_answer(self, completion: str) -> str | None:
        for line in answer_lines(completion, _ANCHOR):
            found = number(line.rpartition("=")[2])
            if found is not None:
                return found
        bare = completion.strip()
        return number(bare) if _NUMBER.fullmatch(bare) else None

    def is_correct(self, answer: str | None, gold: str) -> bool:
        value = None if answer is None else number(answer)
        return value is not None and value == number(gold)
