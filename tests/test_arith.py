import re

import pytest
import yaml

from irpo.tasks.arith import ArithTask
from irpo.tasks.base import Example, reward


def test_splits_are_deterministic_and_disjoint():
    t = ArithTask(train_size=300, test_size=50)
    train, test = t.load("train"), t.load("test")
    assert len(train) == 300 and len(test) == 50
    assert train == ArithTask(train_size=300, test_size=50).load("train")
    assert not {e.question for e in train} & {e.question for e in test}
    assert ArithTask(seed=1).load("test") != ArithTask(seed=2).load("test")


def test_gold_solution_is_correct_and_left_to_right():
    t = ArithTask(num_terms=4, max_operand=9, operators="+-*")
    for ex in t.load("test")[:50]:
        tokens = re.findall(r"\d+|[-+*]", ex.question)
        value = int(tokens[0])
        for op, n in zip(tokens[1::2], tokens[2::2]):
            value = {"+": value + int(n), "-": value - int(n), "*": value * int(n)}[op]
        assert ex.answer == str(value) and ex.solution.split("=")[-1] == ex.answer
        assert len(ex.solution.split(", ")) == 3
        assert reward(t, t.gold_completion(ex), ex) == (ex.answer, 1.0)


def test_extraction_and_checking():
    t = ArithTask()
    assert t.extract_answer(" 3+4=7, 7-2=5. Final answer: 5\n") == "5"
    assert t.extract_answer("Final answer: 4, no wait. Final answer: -12") == "-12"
    assert t.extract_answer("3+4=7") is None and t.extract_answer("") is None
    assert t.is_correct("05", "5") and not t.is_correct("6", "5") and not t.is_correct(None, "5")
    ex = t.load("test")[0]
    assert reward(t, "garbage \x00 Final answer: ", ex) == (None, 0.0)


@pytest.mark.parametrize("kw", [dict(num_terms=1), dict(max_operand=0), dict(operators="+/")])
def test_bad_knobs_fail_at_construction(kw):
    with pytest.raises(ValueError):
        ArithTask(**kw)


def test_too_many_problems_for_the_space_is_an_error():
    with pytest.raises(ValueError, match="distinct"):
        ArithTask(num_terms=2, max_operand=2, operators="+", train_size=20, test_size=5).load("train")


def test_step_credit_rewards_the_gold_steps_right_before_the_first_wrong_one():
    from irpo.tasks.arith import steps_right

    ex = Example("0", "3+4-2", "5", solution="3+4=7, 7-2=5")
    assert steps_right(" 3+4=7, 7-2=5. Final answer: 5\n", ex) == (2, 2)
    assert steps_right(" 3+4=7, 7-2=6. Final answer: 6\n", ex) == (1, 2)
    assert steps_right(" 3+4=8, 8-2=6. Final answer: 6\n", ex) == (0, 2)
    assert steps_right(" 3+4=8, 7-2=5. Final answer: 5\n", ex) == (0, 2)  # right answer through a wrong step
    graded, binary = ArithTask(step_credit=0.5), ArithTask()
    assert reward(graded, " 3+4=7, 7-2=6. Final answer: 6\n", ex) == ("6", 0.25)
    assert reward(graded, " 3+4=7, 7-2=5. Final answer: 5\n", ex) == ("5", 1.0)
    assert reward(binary, " 3+4=7, 7-2=6. Final answer: 6\n", ex) == ("6", 0.0)
    assert reward(graded, "garbage", ex) == (None, 0.0)
    with pytest.raises(ValueError, match="step_credit"):
        ArithTask(step_credit=1.0)


def test_accuracy_counts_correct_answers_not_partial_credit():
    from irpo.evaluate import summarize

    records = [{"reward": 1.0}, {"reward": 0.25}, {"reward": 0.0}, {"reward": 1.0}]
    assert summarize(records, maj_k=0)["test_accuracy"] == 0.5


def shipped_arith_settings() -> list[dict]:
    """The arith task of the default config, of every config group option that changes it and
    of every job of every named sweep: (task knobs, selection's validation size)."""
    import itertools
    from pathlib import Path

    import irpo

    root = Path(__file__).resolve().parents[1]
    launches = [[]] + [[f"experiment={p.stem}"] for p in (root / "conf" / "experiment").glob("*.yaml")]
    for sweep in sorted((root / "sweeps").glob("*.yaml")):
        params = yaml.safe_load(sweep.read_text())["hydra"]["sweeper"]["params"]
        grid = [[f"{k}={v}" for v in str(values).split(",")] for k, values in params.items()]
        launches += [[f"sweep={sweep.stem}", *job] for job in itertools.product(*grid)]
    settings = []
    for overrides in launches:
        cfg = irpo.compose(overrides)
        if cfg.task._target_.endswith("ArithTask"):
            task = {k: v for k, v in cfg.task.items() if k != "_target_"}
            if (task, cfg.selection.val_size) not in settings:
                settings.append((task, cfg.selection.val_size))
    return settings


def test_no_split_of_a_shipped_setting_holds_a_problem_a_shipped_m0_was_tuned_on():
    """At every size a shipped config or sweep uses: test, the loop's train prompts and
    validation are disjoint, hold none of any shipped M_0's fine-tuning problems, and
    validation has what selection asks of it. Without the rule, a 1,100-problem test set held
    362 of M_0's problems."""
    from irpo.tasks.arith import sft_questions, shipped_m0_dirs

    tuned = {d: sft_questions(d) for d in shipped_m0_dirs()}
    assert tuned and all(len(q) > 1000 for q in tuned.values())
    settings = shipped_arith_settings()
    assert any(t["test_size"] == 1100 for t, _ in settings)  # sweep=paper_mini's
    for knobs, val_size in settings:
        task = ArithTask(**knobs)
        splits = {s: [e.question for e in task.load(s)] for s in ("test", "train", "validation")}
        assert len(splits["validation"]) >= val_size
        for name, questions in splits.items():
            assert len(set(questions)) == len(questions), name
            for other in splits:
                assert other == name or not set(questions) & set(splits[other]), (name, other)
            for m0, seen in tuned.items():
                assert not set(questions) & seen, (knobs, name, m0)
