import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def run_cli(*overrides: str, cwd: Path | None = None, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m irpo <overrides>` in a subprocess, as a user runs it."""
    full_env = {**os.environ, "WANDB_SILENT": "true", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "irpo", *overrides], cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout, env=full_env
    )


@pytest.fixture
def cli():
    return run_cli
