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
    proc = subprocess.run([sys.executable, "bench/train_step.py", "--quick", "--threads", "1"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "fp32 matmul peak" in out
    for side in ("irpo", "trl"):
        assert any(line.startswith(side) and "MiB" in line for line in out.splitlines())
    assert "ratio irpo/TRL" in out and "equal loss: yes" in out and "same tokens fed: yes" in out
    assert "prompt share" in out and "padding" in out
