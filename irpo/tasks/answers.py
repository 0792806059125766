"""The paper's answer format, shared by GSM8K, ARC and MATH (PAPER.md §2, "Prompt" row):
one instruction asking for step-by-step reasoning that ends in a "Final answer: ..." line,
and the search for that line in a completion.
"""

from __future__ import annotations

import re

# Sec. 3.1 (GSM8K) and Sec. 3.2 (ARC: the same words, ending "(insert letter here)").
_INSTRUCTION = (
    "Your task is to answer the question below. Give step by step reasoning before you answer, "
    'and when you\'re ready to answer, please use the format "Final answer: {answer}"'
)
STOP = ("\nQuestion:",)  # a model that goes on after its answer starts the next "Question:"
FINAL_WORDS = r"final\s+answer(?:\s+is)?"  # also "the final answer is 18"


def anchor(words: str) -> re.Pattern[str]:
    """A pattern for `words` (a regex) and the rest of their line, skipping the colons,
    asterisks and line breaks between: "**Final Answer:** 18", "Final answer:\n18". The line
    is read in a lookahead, so an anchor inside it ("Final answer: the answer is B") is
    found as well."""
    return re.compile(rf"(?:{words})[\s:*\uff1a]*(?=([^\n]*))", re.IGNORECASE)


FINAL_ANSWER = anchor(FINAL_WORDS)


def instruction(answer: str = "...") -> str:
    return _INSTRUCTION.format(answer=answer)


def answer_lines(text: str, pattern: re.Pattern[str] = FINAL_ANSWER) -> list[str]:
    """The text after each answer anchor up to the end of its line, the last one first: a
    model may restate or revise its answer, and the last statement is the one it ends on."""
    return [m.group(1).strip() for m in pattern.finditer(text)][::-1]
