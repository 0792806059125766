"""Checkpoint selection and the stop rule (the paper's GSM8K recipe, Sec. 3.1: "we pick the
best checkpoint on a held-out 1k train prompts").

While M_θ trains, a candidate is saved (irpo.training.train.CandidateCheckpoints) every `selection.val_every_n_steps` optimizer steps
and at the last step, as a Hugging Face checkpoint; after training each candidate is
evaluated greedily on the validation split by the run's Generator (vLLM or HF, the engine
that samples, so selection works with sharded weights and never generates inside the
training loop), and the best becomes M_{t+1}. The loop stops early when validation
accuracy has not improved for `selection.patience` iterations.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Sequence

from irpo.config import DECODES, ITEMS, TRAINS
from irpo.run.artifacts import Stage, atomic_path, read_json, write_json
from irpo.run.distributed import on_rank_zero

MODEL = "model"  # M_{t+1} in iter_<t>/, and each candidate's checkpoint in its directory
CANDIDATES = "candidates"
SELECTION, VAL_START = "selection.json", "val_start"  # the pick and its numbers; M_t's own validation (t = 0)
# M_{t+1} = the candidate most accurate on the validation split: what made M_{t+1}, so every
# stage of the next iteration depends on these keys too (irpo.loop.stage_config)
SELECT = Stage("select", (SELECTION, VAL_START), (*ITEMS, *TRAINS, *DECODES))


def candidate_dir(it: Path, step: int) -> Path:
    """Candidate `step`: its checkpoint in model/, its validation results beside it."""
    return it / CANDIDATES / f"step_{step}"


def candidate_steps(it: Path) -> list[int]:
    """The steps whose candidate checkpoints were written (model/ appears only once whole:
    it is written aside and renamed)."""
    root = it / CANDIDATES
    return (
        sorted(int(d.name.removeprefix("step_")) for d in root.glob("step_*") if (d / MODEL).is_dir())
        if root.is_dir()
        else []
    )


def best_candidate(accuracies: dict[int, float]) -> int:
    """The step of the most accurate candidate; a tie goes to the later step (the one that
    trained longer, what the run would have kept without selection)."""
    return max(accuracies, key=lambda step: (accuracies[step], step))


def stop_now(history: Sequence[float], patience: int | None, min_delta: float) -> bool:
    """Whether the loop should stop after the model whose validation accuracy is history[-1]
    (history: M_0, M_1, ...): none of the last `patience` models beat the best one before
    them by more than min_delta. Never with patience None."""
    if patience is None:
        return False
    best, waited = history[0], 0
    for accuracy in history[1:]:
        if accuracy > best + min_delta:
            best, waited = accuracy, 0
        else:
            waited += 1
    return waited >= patience


def select(it: Path, val_accuracy: Callable[[Path], float], start_accuracy: float) -> dict:
    """Evaluates every candidate of iteration dir `it` (val_accuracy(candidate dir), on every
    rank), then rank 0 copies the best into it/model (M_{t+1}) and writes
    it/selection.json; returns its content."""
    accuracies = {step: val_accuracy(candidate_dir(it, step)) for step in candidate_steps(it)}
    step = best_candidate(accuracies)
    record = {
        "selected_step": step,
        "val_accuracy": accuracies[step],
        "val_accuracy_start": start_accuracy,
        "last_step": max(accuracies),
        "val_accuracy_last": accuracies[max(accuracies)],
        "candidates": [{"step": s, "val_accuracy": a} for s, a in sorted(accuracies.items())],
    }
    on_rank_zero(_keep, it, step, record)
    return record


def _keep(it: Path, step: int, record: dict) -> None:
    with atomic_path(it / MODEL) as tmp:
        shutil.copytree(candidate_dir(it, step) / MODEL, tmp)
    write_json(it / SELECTION, record)


def history(run_root: Path, t: int) -> list[float]:
    """Validation accuracy of M_0 .. M_{t+1}, from iterations 0..t's selection.json."""
    records = [read_json(run_root / f"iter_{i}" / SELECTION) for i in range(t + 1)]
    return [records[0]["val_accuracy_start"], *(r["val_accuracy"] for r in records)]
