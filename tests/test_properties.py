"""Properties of what turns model text into training data and test numbers: `arith`'s
answer extraction and checking (the real tasks have theirs in test_tasks_*.py), the pair
rule and the majority vote. Model output is arbitrary text, so none of it may raise."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irpo.evaluate import majority_vote
from irpo.pairs import cycle_pairs, prompt_pairs
from irpo.tasks.arith import ArithTask
from irpo.tasks.base import Example, check, reward

TASK = ArithTask()
QUICK = settings(max_examples=200, deadline=None)
# Text that looks like model output: digits, signs, the answer marker and its pieces.
MODEL_TEXT = st.lists(
    st.sampled_from(["Final answer:", "Final answer: ", "-", "0", "7", "12", "\n", " ", "٣"]) | st.text(max_size=6),
    max_size=10,
).map("".join)
ANSWERS = st.one_of(st.none(), st.sampled_from(["1", "2", "3", "-1", "x"]))


@QUICK
@given(MODEL_TEXT, st.integers(-(10**6), 10**6))
def test_reward_of_any_text_is_zero_or_one(text, gold):
    answer, r = reward(TASK, text, Example("0", "q", str(gold)))
    assert r in (0.0, 1.0)
    assert answer is None or isinstance(answer, str)


@QUICK
@given(MODEL_TEXT, MODEL_TEXT)
def test_check_of_any_answer_is_zero_or_one(answer, gold):
    assert check(TASK, answer, gold) in (0.0, 1.0)


@QUICK
@given(MODEL_TEXT)
def test_extraction_is_idempotent_on_its_output(text):
    answer = TASK.extract_answer(text)
    if answer is not None:
        assert TASK.extract_answer(f"Final answer: {answer}") == answer


@QUICK
@given(MODEL_TEXT, st.integers(-(10**9), 10**9))
def test_the_last_final_answer_wins(text, value):
    assert TASK.extract_answer(f"{text}\nFinal answer: {value}") == str(value)


@QUICK
@given(st.integers(-(10**9), 10**9), st.integers(0, 3))
def test_numerically_equal_answers_are_equal(value, zeros):
    # The gold answer is `str(int)`; a model may pad with zeros or write -0.
    sign = "-" if value < 0 else ""
    padded = f"{sign}{'0' * zeros}{abs(value)}"
    assert TASK.is_correct(TASK.extract_answer(f"Final answer: {padded}"), str(value))


@pytest.mark.parametrize("answer,gold", [("05", "5"), ("-0", "0"), ("-007", "-7")])
def test_surface_forms_of_one_number_are_equal(answer, gold):
    assert TASK.is_correct(answer, gold)


@QUICK
@given(st.integers(-50, 50), st.integers(-50, 50))
def test_different_numbers_are_not_equal(a, b):
    assert TASK.is_correct(str(a), str(b)) == (a == b)


@QUICK
@given(st.integers(0, 8), st.integers(0, 8), st.integers(-2, 80))
def test_cycle_pairs_are_distinct_in_range_and_as_many_as_possible(w, l, k):
    pairs = cycle_pairs(w, l, k)
    assert len(set(pairs)) == len(pairs) == max(0, min(k, w * l))
    assert all(0 <= i < w and 0 <= j < l for i, j in pairs)


@QUICK
@given(st.integers(1, 8), st.integers(1, 8), st.integers(1, 80))
def test_cycle_pairs_use_every_sample_evenly(w, l, k):
    # The paper cycles through both sets at once: no winner (loser) is used twice before
    # every other one has been used once.
    pairs = cycle_pairs(w, l, k)
    for side, size in ((0, w), (1, l)):
        uses = Counter(p[side] for p in pairs)
        assert max(uses.values()) - min(uses.get(i, 0) for i in range(size)) <= 1


SAMPLES = st.lists(st.sampled_from([f"s{i}" for i in range(6)]), max_size=12)


@QUICK
@given(SAMPLES, st.sets(st.sampled_from([f"s{i}" for i in range(6)])), st.integers(1, 40), st.integers(0, 3))
def test_prompt_pairs_pair_correct_with_incorrect(completions, correct, k, seed):
    # A completion's reward is a function of its text, as the task's checker makes it.
    rewards = [float(c in correct) for c in completions]
    pairs = prompt_pairs("p", "Q", completions, rewards, k, seed)
    winners = {c for c in completions if c in correct}
    losers = {c for c in completions if c not in correct}
    assert len(set((p.chosen, p.rejected) for p in pairs)) == len(pairs) == min(k, len(winners) * len(losers))
    assert all(p.chosen in winners and p.rejected in losers and not p.chosen_is_gold for p in pairs)


@QUICK
@given(st.lists(st.sampled_from(["a", "b", "c"]), max_size=8), st.integers(1, 10))
def test_gold_is_the_winner_only_when_no_sample_is_correct(losers, k):
    pairs = prompt_pairs("p", "Q", losers, [0.0] * len(losers), k, 0, gold="GOLD")
    assert len(pairs) == min(k, len(set(losers)))
    assert all(p.chosen == "GOLD" and p.chosen_is_gold and p.rejected in losers for p in pairs)
    with_winner = prompt_pairs("p", "Q", losers + ["w"], [0.0] * len(losers) + [1.0], k, 0, gold="GOLD")
    assert all(p.chosen == "w" and not p.chosen_is_gold for p in with_winner)


@QUICK
@given(st.lists(ANSWERS, max_size=12))
def test_majority_vote_is_the_first_most_frequent_answer(answers):
    counts = Counter(a for a in answers if a is not None)
    vote = majority_vote(answers)
    if not counts:
        assert vote is None
        return
    top = max(counts.values())
    assert counts[vote] == top
    assert vote == next(a for a in answers if a is not None and counts[a] == top)


@QUICK
@given(st.lists(ANSWERS, max_size=12), st.randoms(use_true_random=False))
def test_majority_vote_is_permutation_invariant_up_to_ties(answers, rng):
    shuffled = list(answers)
    rng.shuffle(shuffled)
    counts = Counter(a for a in answers if a is not None)
    a, b = majority_vote(answers), majority_vote(shuffled)
    if not counts:
        assert a is b is None
        return
    top = max(counts.values())
    assert counts[a] == counts[b] == top
    if list(counts.values()).count(top) == 1:
        assert a == b
