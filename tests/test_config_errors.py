"""A user's config mistake ends in one line that names the key, exit code 2, no traceback."""

import pytest


@pytest.mark.parametrize(
    "override,needle",
    [
        ("alpha=abc", "alpha"),
        ("task=nope", "task/nope"),
        ("num_samples=0", "num_samples"),
        ("pairs_per_prompt=-1", "pairs_per_prompt"),
        ("iterations=0", "iterations"),
        ("temperatures=[]", "temperatures"),
        ("alhpa=1", "alhpa"),
        ("task.num_termz=3", "num_termz"),
        ("trainer.reference=other", "trainer.reference"),
        ("trainer.micro_batch_size=0", "trainer.micro_batch_size"),
        ("trainer.micro_batch_tokens=0", "trainer.micro_batch_tokens"),
        ("trainer.precision=fp8", "trainer.precision"),
        ("model.save_dtype=int8", "model.save_dtype"),
        ("beta=-0.1", "beta"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(cli, override, needle):
    proc = cli(override, "logger=none", timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("irpo: error:") and needle in lines[0]
    assert "Traceback" not in proc.stderr


def test_task_error_lists_the_options(cli):
    proc = cli("task=nope", timeout=120)
    assert "arith" in proc.stderr and "_schema" not in proc.stderr


def test_bad_task_knob_is_one_line(cli):
    proc = cli("task.num_terms=1", timeout=120)
    assert proc.returncode == 2 and "num_terms" in proc.stderr and "Traceback" not in proc.stderr
