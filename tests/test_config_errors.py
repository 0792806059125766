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
        ("num_threads=two", "num_threads"),
        ("task.test_size=0", "task.test_size"),  # measured nothing: accuracy 0.000 every iteration
        ("task.train_size=0", "task.train_size"),  # found no pairs only after generating
        ("max_pairs=0", "max_pairs"),
        ("num_threads=0", "num_threads"),
        ("experiment=paper_gsm8kk", "paper_gsm8k,"),  # a typo is refused, naming the choices
        ("sweep=nll_ablaton", "nll_ablation,"),
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


def test_a_typo_in_a_sweep_name_runs_no_job(cli):
    proc = cli("-m", "sweep=nope", "plan=true", timeout=120)
    assert proc.returncode == 2 and "sweep/nope" in proc.stderr and "nll_ablation" in proc.stderr
    assert "plan" not in proc.stdout


def test_a_value_for_a_swept_key_says_it_replaces_that_axis(cli):
    """Hydra lets the command line's alpha win over the sweep's alpha=0,1: one line says
    the sweep shrank, and the other axes stay (sweep=paper_mini seed=3,4,5 keeps its arms)."""
    proc = cli("-m", "sweep=nll_ablation", "alpha=0.5", "plan=true", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "alpha=0.5 replaces the values 0,1 that sweep nll_ablation gives alpha" in proc.stderr
    assert proc.stdout.count("== plan ==") == 1
    proc = cli("-m", "sweep=nll_ablation", "beta=0.2", "plan=true", timeout=300)
    assert proc.returncode == 0 and "replaces" not in proc.stderr and proc.stdout.count("== plan ==") == 2


@pytest.mark.parametrize("argv", [["irpo.report"], ["irpo.dashboard", "--dry-run"], ["irpo.report", "--nope"]])
def test_the_other_entry_points_answer_a_usage_error_in_one_line(argv):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("irpo: error:"), proc.stderr
