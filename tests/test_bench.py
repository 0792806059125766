"""The training-step bench on its quick setting: both sides run on the tiny model, compute
the same first-batch loss, and the table is printed (numbers are not asserted: timings on a
shared machine are whatever they are)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_step_bench_quick_prints_both_sides_at_equal_loss():
    pytest.importorskip("trl")
    env = {**os.environ, "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [sys.executable, "bench/train_step.py", "--quick", "--threads", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "fp32 matmul peak" in out
    for side in ("irpo", "trl"):
        assert any(line.startswith(side) and "MiB" in line for line in out.splitlines())
    assert "ratio irpo/TRL" in out and "equal loss: yes" in out and "same tokens fed: yes" in out
    assert "prompt share" in out and "padding" in out


def test_generation_bench_ends_each_row_at_its_drawn_length():
    """bench/generation.py's HF side: a row may not end (EOS or pad) before its length and ends
    at it, as vLLM's max_tokens with ignore_eos does."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("generation_bench", ROOT / "bench/generation.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    width, eos, pad = 3, 2, 0
    end = bench.EndAt(width, [1, 3], eos, pad)
    ids = torch.zeros(2, width, dtype=torch.long)
    made = []
    for _ in range(4):
        scores = end(ids, torch.zeros(2, 5))
        made.append(scores.argmax(-1).tolist())
        if len(made) < 3:
            assert (scores[1, [eos, pad]] == float("-inf")).all()
        ids = torch.cat([ids, torch.full((2, 1), 4)], dim=1)
    assert made[0][0] == eos and made[2][1] == eos  # row 0 at its 1st token, row 1 at its 3rd
    assert made[1][1] != eos and made[0][1] != eos


@pytest.mark.slow
def test_logits_memory_bench_quick_prints_both_sides():
    proc = subprocess.run(
        [sys.executable, "bench/logits_memory.py", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.split()[:1] in (["64"], ["256"])]
    assert [(r[0], r[1]) for r in rows] == [("64", "before"), ("64", "after"), ("256", "before"), ("256", "after")]
    assert rows[3][2] == "2"  # 256-token completions: two micro-batches of at most 512 tokens
    assert "after: peak from 64 to 256 completion tokens within" in proc.stdout


@pytest.mark.slow
def test_gpu_check_runs_its_steps_on_the_cpu_and_prints_each_row():
    pytest.importorskip("trl")
    proc = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--cpu", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_SILENT": "true"},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line[:1].strip()}
    assert {"machine", "tiny", "qwen2", "train", "total"} <= set(rows), proc.stdout
    assert "M_0" in rows["tiny"] and "-> M_1" in rows["tiny"] and "pair-tokens/s (MFU" in rows["qwen2"]
    assert "ratio irpo/TRL" in proc.stdout and "equal loss: yes" in proc.stdout
