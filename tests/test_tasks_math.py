"""MATH: loading, the 4-shot prompt, \\boxed / "Final answer:" extraction, and math-verify
checking, on the main thread, in a thread and in a DataLoader worker."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irpo.tasks.base import Example, Task, reward
from irpo.tasks.math import MATHTask, last_boxed, unwrap
from irpo.tasks.math_shots import SHOTS

FIXTURES = Path(__file__).parent / "fixtures" / "math"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "math"  # beside the checkout
TASK = MATHTask(check_timeout_s=2)


@pytest.fixture(scope="module")
def train():
    return MATHTask(data_path=str(FIXTURES)).load("train")


def test_is_a_task():
    assert isinstance(TASK, Task)


def test_rows_become_examples(train, caplog):
    first = train[0]
    assert (
        first.id == "train/algebra/0.json" and first.answer == "0" and first.solution.endswith("$a+b=-3+3=\\boxed{0}$.")
    )
    answers = {e.id: e.answer for e in train}
    # The 4 exemplars are in the fixture file but not among the training prompts; the row
    # with an empty \boxed{} is skipped with a warning.
    assert not {e.question for e in train} & {problem for problem, _ in SHOTS}
    assert "train/number_theory/7115.json" not in answers and len(train) == 41 - 4 - 1
    with caplog.at_level(logging.WARNING, logger="irpo.tasks.math"):
        MATHTask(data_path=str(FIXTURES)).load("train")
    assert "skipped 1 rows whose solution has no \\boxed{...} answer" in caplog.text
    assert "train.jsonl line" in caplog.text


def test_a_file_where_no_row_has_an_answer(tmp_path):
    from irpo.errors import UserError

    (tmp_path / "test.jsonl").write_text(json.dumps({"problem": "p", "solution": "no box"}) + "\n")
    with pytest.raises(UserError, match=r"test.jsonl line 1 \(and every other row\): the solution has no"):
        MATHTask(data_path=str(tmp_path)).load("test")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("$\\boxed{1}$ and $\\boxed{2}$", "2"),
        ("is $\\boxed 9$.", "9"),
        ("\\fbox{x}", "x"),
        ("\\boxed{\\text{ {a} }}", "\\text{ {a} }"),
        ("\\boxed{unclosed", None),
        ("none", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    "line, expected",
    [
        ("$\\frac12$.", "\\frac12"),
        ("$$x$$", "x"),
        ("$5$ and $6$", "$5$ and $6$"),
        ("\\(x\\)", "x"),
        ("$\\boxed{5}$.", "5"),
        ("90\\text{ square\nunits}", "90\\text{ square units}"),
        ("$", "$"),
        ("", ""),
    ],
)
def test_unwrap(line, expected):
    assert unwrap(line) == expected


def test_prompt_is_four_shot_in_the_papers_format():
    prompt = TASK.prompt(Example(id="x", question="What is $1+1$?", answer="2"))
    assert prompt.startswith(
        "Your task is to answer the question below. Give step by step reasoning before you answer, "
        'and when you\'re ready to answer, please use the format "Final answer: ..."\nQuestion: Find the domain'
    )
    assert prompt.count("Question: ") == 5 and prompt.count("\nFinal answer: $") == 4
    assert "\\boxed{[2,5)}$.\nFinal answer: $[2,5)$\n\n" in prompt and "Final answer: $-\\frac{2}{3}$\n\n" in prompt
    assert prompt.endswith("\n\nQuestion: What is $1+1$?\nSolution:")


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/math")
def test_the_shots_are_train_rows_unchanged():
    rows = [json.loads(line) for line in (SHARED / "train.jsonl").read_text().splitlines()]
    assert set(SHOTS) <= {(r["problem"], r["solution"]) for r in rows}


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_gold_completion_is_rewarded(split):
    for example in MATHTask(data_path=str(FIXTURES)).load(split):
        assert reward(TASK, TASK.gold_completion(example), example) == (example.answer, 1.0), example.id


def test_equivalent_forms_of_every_fixture_answer_go_through_math_verify():
    for example in MATHTask(data_path=str(FIXTURES)).load("test"):
        variant = example.answer.replace("\\frac", "\\dfrac").replace("\\!", "")
        assert TASK.is_correct(variant, example.answer), example.id


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/math")
def test_every_gold_completion_of_the_full_dataset_is_rewarded():
    task = MATHTask(data_path=str(SHARED))
    for split in ("train", "test"):
        for example in task.load(split):
            assert reward(task, task.gold_completion(example), example)[1] == 1.0, example.id


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("So $x=\\boxed{\\dfrac{1}{2}}$.\nFinal answer: $\\dfrac{1}{2}$", "\\dfrac{1}{2}"),
        ("The answer is $\\boxed{\\frac12}$.", "\\frac12"),  # no final-answer line: the last box
        ("Final answer: \\boxed{1/2}", "1/2"),
        ("Final answer: $x = \\frac{1}{2}$.", "x = \\frac{1}{2}"),
        ("**Final Answer:** $3$", "3"),
        ("Final answer: **5**", "5"),
        ("$\\boxed{4}$\nFinal answer:", "4"),  # an empty final-answer line says nothing
        ("Final answer: 5\nHmm, recheck.\nFinal answer: 6", "6"),
        ("x is 1/2, I think.", None),
        ("Final answer: \\boxed{", "\\boxed{"),  # unbalanced: kept as written, and fails the check
        ("", None),
    ],
)
def test_extract_answer(completion, expected):
    assert TASK.extract_answer(completion) == expected


@pytest.mark.parametrize(
    "answer, gold, correct",
    [
        ("\\dfrac{1}{2}", "\\frac{1}{2}", True),
        ("0.5", "\\frac12", True),
        ("1/2", "\\frac{1}{2}", True),
        ("x = \\frac{1}{2}", "\\frac{1}{2}", True),
        ("2\\sqrt{3}", "\\sqrt{12}", True),
        ("(-\\infty, 3]", "(-\\infty,3]", True),
        ("(-\\infty, 3)", "(-\\infty,3]", False),
        ("5\\text{ cm}", "5", True),
        ("90^\\circ", "90", True),
        ("10\\%", "10", True),
        ("4989600", "4,\\!989,\\!600", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
        ("\\text{(C)}", "\\text{(C)}", True),
        ("3", "4", False),
        ("\\pi", "3.14159", False),
        ("garbage", "1", False),
        ("\\boxed{", "1", False),
        (None, "1", False),
    ],
)
def test_is_correct(answer, gold, correct):
    assert TASK.is_correct(answer, gold) is correct


def test_checking_off_the_main_thread():
    # math-verify's time limit is SIGALRM, which only the main thread may set.
    results = []
    thread = threading.Thread(target=lambda: results.append(TASK.is_correct("\\dfrac{2}{4}", "\\frac{1}{2}")))
    thread.start()
    thread.join()
    assert results == [True]


class _Checks:
    """A torch Dataset whose items are checks, for a DataLoader worker process."""

    pairs = [("\\dfrac{2}{4}", "\\frac{1}{2}"), ("3", "4")]

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        return TASK.is_correct(*self.pairs[i])


def test_checking_in_a_dataloader_worker():
    from torch.utils.data import DataLoader

    assert [bool(x) for x in DataLoader(_Checks(), batch_size=None, num_workers=1)] == [True, False]


FRAGMENTS = st.sampled_from(
    [
        "Final answer:",
        "\\boxed{",
        "\\boxed ",
        "{",
        "}",
        "$",
        "\\frac{1}{2}",
        "x=",
        "\\(",
        "\\)",
        "\n",
        " ",
        ".",
        "%",
        "\\!",
        "2",
    ]
)
MODEL_TEXT = st.lists(FRAGMENTS | st.text(max_size=6), max_size=10).map("".join)


@settings(max_examples=150, deadline=None)
@given(MODEL_TEXT)
def test_extraction_never_raises_and_is_idempotent(text):
    answer = TASK.extract_answer(text)
    if answer is not None:
        assert unwrap(answer) == answer
        assert TASK.extract_answer(f"Final answer: {answer}") == answer


@settings(max_examples=40, deadline=None)
@given(MODEL_TEXT)
def test_checking_arbitrary_text_never_raises(text):
    answer = TASK.extract_answer(text)
    assert TASK.is_correct(answer, "\\frac{1}{2}") in (True, False)
    assert reward(TASK, text, Example(id="x", question="q", answer="\\frac{1}{2}"))[1] in (0.0, 1.0)
