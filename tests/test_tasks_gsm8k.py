"""GSM8K: loading real rows, the paper's prompt, numeric extraction and checking."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irpo.tasks.base import Task, reward
from irpo.tasks.gsm8k import GSM8KTask, number

FIXTURES = Path(__file__).parent / "fixtures" / "gsm8k"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"  # beside the checkout
TASK = GSM8KTask()


@pytest.fixture(scope="module")
def train():
    return GSM8KTask(data_path=str(FIXTURES)).load("train")


def test_is_a_task():
    assert isinstance(TASK, Task)


def test_rows_become_examples(train):
    first = train[0]
    assert first.answer == "72" and first.id == "train/0"
    assert (
        first.solution
        == "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May."
    )
    assert all("<<" not in e.solution and "####" not in e.solution for e in train)
    assert {e.answer for e in train} >= {"1080", "850000"}  # "#### 1,080" etc.


def test_prompt_is_the_papers_zero_shot_prompt(train):
    assert TASK.prompt(train[0]) == (
        "Your task is to answer the question below. Give step by step reasoning before you answer, "
        'and when you\'re ready to answer, please use the format "Final answer: ..."\n'
        f"Question: {train[0].question}\nSolution:"
    )


def test_gold_completion_ends_in_the_final_answer_line(train):
    assert TASK.gold_completion(train[0]).endswith("clips altogether in April and May.\nFinal answer: 72")


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_gold_completion_is_rewarded(split):
    for example in GSM8KTask(data_path=str(FIXTURES)).load(split):
        assert reward(TASK, TASK.gold_completion(example), example) == (example.answer, 1.0)


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/gsm8k")
def test_every_gold_completion_of_the_full_dataset_is_rewarded():
    task = GSM8KTask(data_path=str(SHARED))
    for split in ("train", "test"):
        for example in task.load(split):
            assert reward(task, task.gold_completion(example), example)[1] == 1.0, example.id


@pytest.mark.parametrize(
    "text, expected",
    [
        ("72", "72"),
        ("1,080", "1080"),
        ("$1,234.50", "1234.5"),
        ("-5", "-5"),
        ("\u22125", "-5"),
        ("+3", "3"),
        ("72.00", "72"),
        ("0.50", "0.5"),
        (".5", "0.5"),
        ("25%", "25"),
        ("\u20ac30", "30"),
        ("100", "100"),
        ("-0", "0"),
        ("18 dollars", "18"),
        ("no digits", None),
        ("1,2,3", "1"),
        ("\u0663", None),
    ],
)
def test_number(text, expected):
    assert number(text) == expected


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("She sold 48/2 = 24 in May.\nFinal answer: 72", "72"),
        ("Final answer: $1,080.00", "1080"),
        ("Final answer: 18 dollars, 3 more than 15", "18"),
        ("Final answer: 3 + 5 = 8", "8"),
        ("Final answer: -4", "-4"),
        ("Final answer: 25%", "25"),
        ("**Final Answer:** 42", "42"),
        ("The final answer is 42.", "42"),
        ("Final answer:\n42", "42"),
        ("Final answer: 10\nWait, I made a mistake.\nFinal answer: 12", "12"),  # the last one wins
        ("Final answer: 12\nFinal answer: none of these", "12"),  # ... that holds a number
        ("5 + 7 = 12 so she has 12 apples.", None),  # no final-answer line: no fallback
        ("Natalia sold 72 clips.\n#### 72", "72"),  # the gold's own format
        ("  72 ", "72"),  # nothing but a number
        ("", None),
        ("Final answer: unknown", None),
    ],
)
def test_extract_answer(completion, expected):
    assert TASK.extract_answer(completion) == expected


@pytest.mark.parametrize(
    "answer, gold, correct",
    [
        ("72", "72", True),
        ("72.0", "72", True),
        ("1080", "1,080", True),
        ("-3", "3", False),
        ("7.2", "72", False),
        (None, "72", False),
        ("garbage", "72", False),
    ],
)
def test_is_correct(answer, gold, correct):
    assert TASK.is_correct(answer, gold) is correct


FRAGMENTS = st.sampled_from(
    ["Final answer:", "final answer is", "####", "=", "$", "1,000", "-3.5", "72", "%", "\n", " ", "**", "."]
)
MODEL_TEXT = st.lists(FRAGMENTS | st.text(max_size=6), max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(MODEL_TEXT)
def test_extraction_never_raises_and_is_idempotent(text):
    answer = TASK.extract_answer(text)
    if answer is not None:
        assert TASK.extract_answer(answer) == answer
        assert TASK.extract_answer(f"Final answer: {answer}") == answer
        assert TASK.is_correct(answer, answer)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_checking_arbitrary_text_never_raises(answer, gold):
    TASK.is_correct(answer, gold)
