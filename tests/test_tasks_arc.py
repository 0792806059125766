"""ARC-Challenge: both row formats, numeric labels, ARC-Easy for training, the paper's
prompt, and letter extraction."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irpo.errors import UserError
from irpo.tasks.arc import ARCTask
from irpo.tasks.base import Example, Task, reward

FIXTURES = Path(__file__).parent / "fixtures" / "arc"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "arc"  # beside the checkout
TASK = ARCTask()


@pytest.fixture(scope="module")
def test_split():
    return ARCTask(data_path=str(FIXTURES)).load("test")


def test_is_a_task():
    assert isinstance(TASK, Task)


def test_nested_and_flat_formats_give_the_same_examples(test_split):
    assert ARCTask(data_path=str(FIXTURES / "hub_format.jsonl")).load("test") == test_split


def test_choices_and_labels(test_split):
    first = test_split[0]
    assert first.id == "Mercury_7175875" and first.answer == "C"
    assert first.choices[0] == ("A", "Planetary density will decrease.")
    assert {len(e.choices) for e in test_split} == {3, 4, 5}
    # NYSEDREGENTS rows are labelled 1-4 in the data and become A-D, the answer key with them.
    regents = [e for e in test_split if e.id.startswith("NYSEDREGENTS")]
    assert regents and all([label for label, _ in e.choices] == list("ABCD"[: len(e.choices)]) for e in regents)
    assert all(e.answer in {label for label, _ in e.choices} for e in test_split)
    assert all(e.solution is None and TASK.gold_completion(e) is None for e in test_split)


def test_splits_and_include_easy():
    task = ARCTask(data_path=str(FIXTURES))
    assert [len(task.load(s)) for s in ("train", "validation", "test")] == [20, 15, 18]
    with_easy = ARCTask(data_path=str(FIXTURES), include_easy=True)
    assert len(with_easy.load("train")) == 20 + 16
    assert len(with_easy.load("test")) == 18  # ARC-Easy only joins the training questions
    with pytest.raises(UserError, match="include_easy needs task.data_path to be a directory"):
        ARCTask(data_path=str(FIXTURES / "train.jsonl"), include_easy=True).load("train")


@pytest.mark.parametrize(
    "row, message",
    [
        ('{"id": "x", "question": {"choices": []}, "answerKey": "A"}', "no field 'question.stem'"),
        (
            '{"id": "x", "question": {"stem": "q", "choices": ["A"]}, "answerKey": "A"}',
            "each of question.choices needs",
        ),
        ('{"id": "x", "question": "q", "choices": {"text": ["a"], "label": ["A", "B"]}, "answerKey": "A"}', "one text"),
        (
            '{"id": "x", "question": "q", "choices": {"text": ["a"], "label": ["Z"]}, "answerKey": "Z"}',
            "label 'Z' is not",
        ),
        (
            '{"id": "x", "question": "q", "choices": {"text": ["a"], "label": ["A"]}, "answerKey": "B"}',
            "answerKey 'B' is not",
        ),
        ('{"id": "x", "question": "q", "choices": {"text": ["a"], "label": ["A"]}}', "no field 'answerKey'"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    (tmp_path / "test.jsonl").write_text((FIXTURES / "test.jsonl").read_text().splitlines()[0] + "\n" + row + "\n")
    with pytest.raises(UserError, match=rf"test.jsonl line 2: .*{message}"):
        ARCTask(data_path=str(tmp_path)).load("test")


def test_prompt_is_the_papers_zero_shot_prompt_with_lettered_options():
    example = Example(
        id="x", question="Which is a gas?", answer="B", choices=(("A", "ice"), ("B", "steam"), ("C", "rock"))
    )
    assert TASK.prompt(example) == (
        "Your task is to answer the question below. Give step by step reasoning before you answer, "
        'and when you\'re ready to answer, please use the format "Final answer: (insert letter here)"\n'
        "Question: Which is a gas?\n(A) ice\n(B) steam\n(C) rock\nSolution:"
    )


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("Steam is water vapour.\nFinal answer: (B)", "B"),
        ("Final answer: B", "B"),
        ("Final answer: B)", "B"),
        ("Final answer: (C) palms covered with oil", "C"),
        ("Final answer: C. dry palms", "C"),
        ("Final answer: b", "B"),
        ("final answer: (d)", "D"),
        ("**Final Answer:** $\\boxed{E}$", "E"),
        ("Answer: b", "B"),
        ("The correct answer is (A).", "A"),
        ("Final answer: The answer is C", "C"),
        ("Final answer: 2", "B"),  # a numeric label is its position
        ("Final answer: (3)", "C"),
        ("Final answer: (A)\nOn reflection, final answer: (D)", "D"),  # the last one wins
        ("Final answer: (A)\nThis answer is certain.", "A"),  # "answer is certain" names nothing
        ("(b)", "B"),  # nothing but a label
        ("Final answer: a ball of ice", None),  # the article "a" is not option A
        ("I think the ice melts.", None),
        ("Final answer: F", None),
        ("", None),
    ],
)
def test_extract_answer(completion, expected):
    assert TASK.extract_answer(completion) == expected


@pytest.mark.parametrize(
    "answer, gold, correct",
    [
        ("B", "B", True),
        ("b", "B", True),
        ("(B)", "B", True),
        ("2", "B", True),
        ("B", "2", True),
        ("C", "B", False),
        (None, "B", False),
        ("", "B", False),
    ],
)
def test_is_correct(answer, gold, correct):
    assert TASK.is_correct(answer, gold) is correct


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/arc")
def test_full_dataset_loads_with_easy_and_its_keys_are_rewarded():
    task = ARCTask(data_path=str(SHARED), include_easy=True)
    assert [len(task.load(s)) for s in ("train", "validation", "test")] == [1119 + 2251, 299, 1172]
    for example in task.load("test"):
        assert reward(task, f"...\nFinal answer: ({example.answer})", example)[1] == 1.0


FRAGMENTS = st.sampled_from(
    ["Final answer:", "Answer:", "answer is", "(", ")", "A", "b", "3", "E", "\\boxed{", "}", "$", "*", "\n", " ", "."]
)
MODEL_TEXT = st.lists(FRAGMENTS | st.text(max_size=6), max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(MODEL_TEXT)
def test_extraction_never_raises_and_is_idempotent(text):
    answer = TASK.extract_answer(text)
    if answer is not None:
        assert answer in "ABCDE"
        assert TASK.extract_answer(answer) == answer
        assert TASK.extract_answer(f"Final answer: {answer}") == answer
        assert TASK.is_correct(answer, answer)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_checking_arbitrary_text_never_raises(answer):
    assert TASK.is_correct(answer, "A") in (True, False)
