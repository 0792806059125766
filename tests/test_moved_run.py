"""A run directory moved elsewhere, resumed from a checkout that lies elsewhere too,
redoes no stage; M_0's bytes changed under it are refused, naming model.path."""

from __future__ import annotations

import shutil

import pytest
from conftest import ROOT, run_cli

from irpo.run.artifacts import read_json, read_jsonl

pytestmark = pytest.mark.slow

SMALL = [
    "iterations=1",
    "task.train_size=16",
    "task.test_size=8",
    "num_samples=4",
    "eval.maj_k=0",
    "logger=none",
    "trainer.progress_bar=false",
]


def starts(run):
    return [e["stage"] for e in read_jsonl(run / "events.jsonl") if e["event"] == "start"]


def test_a_moved_checkout_and_run_directory_resume_without_redoing_a_stage(tmp_path):
    first = run_cli(*SMALL, f"hydra.run.dir={tmp_path / 'run'}")
    assert first.returncode == 0, first.stderr[-3000:]
    done = starts(tmp_path / "run")
    assert done == [
        "iter_0/eval",
        "iter_0/generate",
        "iter_0/pairs",
        "iter_0/reference",
        "iter_0/train",
        "iter_0/logps",
        "iter_1/eval",
    ]

    # Another checkout (as a re-clone or another node would have): `python -m irpo` run in
    # it imports its package, so M_0 is read from a directory the first run never saw.
    moved = tmp_path / "elsewhere" / "checkout"
    for part in ("irpo", "conf"):
        shutil.copytree(ROOT / part, moved / part, ignore=shutil.ignore_patterns("__pycache__"))
    run = shutil.move(tmp_path / "run", tmp_path / "elsewhere" / "run")
    manifest = read_json(run / "manifest.json")

    again = run_cli(*SMALL, f"hydra.run.dir={run}", cwd=moved)
    assert again.returncode == 0, again.stderr[-3000:]
    assert starts(run) == done
    assert read_json(run / "manifest.json") == manifest

    weights = moved / "irpo" / "models" / "tiny_m0" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(data)
    refused = run_cli(*SMALL, f"hydra.run.dir={run}", cwd=moved)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr[-3000:]
    assert "holds stage iter_0/eval made with other values of model.path;" in refused.stderr
    assert starts(run) == done
