"""Checkpoint selection on a validation split, and the stop rule: the pure pieces exactly, then
the loop with selection on, stopped early, and resumed."""

import json
from types import SimpleNamespace

import pytest

from irpo.errors import UserError
from irpo.run.artifacts import read_jsonl
from irpo.tasks.arith import ArithTask
from irpo.tasks.subsets import validation_split
from irpo.training.selection import best_candidate, candidate_steps, stop_now
from irpo.training.train import CandidateCheckpoints


@pytest.mark.parametrize(
    "history,patience,min_delta,stop",
    [
        ([0.4, 0.5], None, 0.0, False),  # no rule
        ([0.4, 0.5], 1, 0.0, False),  # improved
        ([0.4, 0.4], 1, 0.0, True),  # equal is no improvement
        ([0.4, 0.45], 1, 0.05, True),  # a gain of min_delta is not enough
        ([0.4, 0.46], 1, 0.05, False),
        ([0.4, 0.5, 0.45], 2, 0.0, False),  # one bad iteration of two allowed
        ([0.4, 0.5, 0.45, 0.49], 2, 0.0, True),  # two since the best (0.5)
        ([0.4, 0.5, 0.45, 0.51], 2, 0.0, False),  # a new best resets the count
        ([0.4, 0.3, 0.35], 2, 0.0, True),  # never beat M_0
    ],
)
def test_stop_rule(history, patience, min_delta, stop):
    assert stop_now(history, patience, min_delta) is stop


def test_best_candidate_prefers_accuracy_then_the_later_step():
    assert best_candidate({10: 0.4, 20: 0.5, 30: 0.45}) == 20
    assert best_candidate({10: 0.5, 20: 0.5, 30: 0.45}) == 20


def test_candidates_saved_every_n_optimizer_steps_once_each(tmp_path):
    saved = []

    def save(path):
        saved.append(path)
        path.mkdir(parents=True)

    (tmp_path / "candidates" / "step_2" / "model").mkdir(parents=True)  # left by a killed run
    cb = CandidateCheckpoints(tmp_path, 2, save)
    # each step seen twice, as where global_step holds still for batches that end no step
    for step in (0, 1, 1, 2, 2, 3, 3, 4, 4, 5):
        cb.on_train_batch_end(SimpleNamespace(global_step=step), None, None, None, 0)
    cb.save_step(5)  # the last step, after fit
    assert [p.parent.name for p in saved] == ["step_4", "step_5"]
    assert candidate_steps(tmp_path) == [2, 4, 5]


def test_validation_split_held_out_from_train_or_from_the_task():
    task = ArithTask(train_size=100, test_size=10, validation_size=50)
    train = task.load("train")
    rest, val = validation_split(task, train, 30, "train", 0)
    assert len(rest) == 70 and len(val) == 30 and not {e.id for e in rest} & {e.id for e in val}
    assert [e.id for e in val] == [e.id for e in validation_split(task, train, 30, "train", 0)[1]]  # seeded, stable
    assert [e.id for e in rest] == sorted((e.id for e in rest), key=int)  # file order kept
    same, own = validation_split(task, train, 20, "validation", 0)
    assert same == train and len(own) == 20 and not {e.question for e in own} & {e.question for e in train}
    assert validation_split(task, train, 0, "train", 0) == (train, [])
    with pytest.raises(UserError, match="selection.val_size"):
        validation_split(task, train, 100, "train", 0)
    with pytest.raises(UserError, match="validation split"):
        validation_split(task, train, 60, "validation", 0)


SELECT = [
    "iterations=3",
    "task.train_size=48",
    "task.test_size=16",
    "num_samples=4",
    "eval.maj_k=0",
    "logger=none",
    "trainer.progress_bar=false",
    "trainer.batch_size=8",
    "selection.val_size=24",
    "selection.val_every_n_steps=2",
]


@pytest.mark.slow
def test_loop_selects_the_best_candidate_stops_early_and_resumes(tmp_path, cli):
    run = tmp_path / "run"
    # patience 1 with an unreachable min_delta: the loop stops after training M_1
    args = [*SELECT, "selection.patience=1", "selection.min_delta=0.5", f"hydra.run.dir={run}"]
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sel = json.loads((run / "iter_0" / "selection.json").read_text())
    steps = [c["step"] for c in sel["candidates"]]
    assert (
        steps == sorted({*range(2, sel["last_step"] + 1, 2), sel["last_step"]}) and len(steps) > 1
    )  # every 2nd step, and the last
    assert sel["val_accuracy"] == max(c["val_accuracy"] for c in sel["candidates"])
    chosen = run / "iter_0" / "candidates" / f"step_{sel['selected_step']}" / "model" / "model.safetensors"
    assert (run / "iter_0" / "model" / "model.safetensors").read_bytes() == chosen.read_bytes()
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [0, 1] and rows[-1]["stopped_early"] == 1.0
    assert rows[0]["val_accuracy_selected"] == sel["val_accuracy"] and rows[0]["selected_step"] == sel["selected_step"]
    assert not (run / "iter_1" / "generations.jsonl").exists()
    finished = [e for e in read_jsonl(run / "events.jsonl") if e.get("event") == "finish"]
    proc = cli(*args)  # the same command again: nothing is redone
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [e for e in read_jsonl(run / "events.jsonl") if e.get("event") == "finish"] == finished
