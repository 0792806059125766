"""Named sweeps, the config from Python, `--help`, the SLURM launcher, the dashboard spec and
the wheel's config files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import irpo
from irpo.config import validate

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))
TINY_SWEEPS = ("nll_ablation", "num_samples", "pairs_per_prompt", "beta", "methods", "paper_mini")


def test_the_named_sweeps_are_there():
    assert set(TINY_SWEEPS) < set(SWEEPS) and "paper_alpha_task" in SWEEPS


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_file_says_what_it_answers(name):
    lines = (ROOT / "sweeps" / f"{name}.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_"
    comment = " ".join(line for line in lines[1:4] if line.startswith("# "))
    assert "?" in comment, f"{name}: the comment under the header asks the sweep's question"


@pytest.mark.parametrize("name", SWEEPS)
def test_every_value_of_every_sweep_composes_and_validates(name, request):
    """Each job a sweep would launch is a valid config: its params expanded one by one (the
    paper-scale sweep as torchrun starts it on its 16 GPUs)."""
    if name not in TINY_SWEEPS:
        request.getfixturevalue("launched_on_16_ranks")
    with initialize_config_dir(config_dir=str(irpo.conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"sweep={name}"], return_hydra_config=True)
        params = dict(cfg.hydra.sweeper.params)
        assert params, name
        for key, values in params.items():
            for value in str(values).split(","):
                job = compose("config", overrides=[f"sweep={name}", f"{key}={value}"])
                validate(job)
                if key in ("alpha", "beta", "num_samples", "pairs_per_prompt"):
                    assert float(OmegaConf.select(job, key)) == float(value)
                if key == "method":
                    assert job.method.name == value


def test_tiny_sweeps_stay_tiny():
    """The sweeps meant for a CPU keep a shipped tiny model; the paper one is for a cluster."""
    for name in TINY_SWEEPS:
        cfg = irpo.compose([f"sweep={name}"])
        assert (
            cfg.model.path.endswith("mini_m0" if name == "paper_mini" else "tiny_m0")
            and cfg.trainer.accelerator == "cpu"
        )
    paper = irpo.compose(["sweep=paper_alpha_task", "experiment=paper_gsm8k"])
    assert paper.model.path == "meta-llama/Llama-2-70b-chat-hf" and paper.trainer.strategy == "fsdp"
    assert paper.generator._target_.endswith("VLLMGenerator")


def test_import_irpo_is_enough_for_hydra_compose():
    """A fresh interpreter, as in a notebook: no registration call by hand."""
    code = (
        "import irpo\n"
        "from hydra import compose, initialize_config_dir\n"
        "with initialize_config_dir(config_dir=str(irpo.conf_dir()), version_base='1.3'):\n"
        "    cfg = compose('config', overrides=['generator=vllm', 'task=gsm8k', 'sweep=beta'])\n"
        "assert cfg.generator.tensor_parallel_size == 1 and cfg.task._target_.endswith('GSM8KTask'), cfg\n"
        "assert irpo.compose(['alpha=0']).alpha == 0.0\n"
        "assert irpo.compose().model.path.endswith('tiny_m0')\n"
        "print('composed')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0 and "composed" in proc.stdout, proc.stderr[-3000:]


def test_help_names_irpo_and_lists_real_choices_only(cli):
    proc = cli("--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("irpo: Iterative Reasoning Preference Optimization") and "__main__" not in out
    assert "_schema" not in out
    groups = dict(
        line.strip().split(": ", 1)
        for line in out.splitlines()
        if line.startswith("  ") and ": " in line and "," in line
    )
    assert set(groups["sweep"].split(", ")) == set(SWEEPS)
    methods = {p.stem for p in (irpo.conf_dir() / "method").glob("*.yaml") if not p.stem.startswith("_")}
    assert {"dpo", "irpo", "kto", "simpo", "zero_shot"} <= methods
    assert set(groups["method"].split(", ")) == methods
    assert "arith" in groups["task"] and "tensorboard" in groups["logger"]


def test_slurm_launcher_composes(cli):
    proc = cli("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra")
    assert proc.returncode == 0, proc.stderr
    launcher = OmegaConf.create(proc.stdout).hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.partition == "gpu" and launcher.gpus_per_node == launcher.tasks_per_node == 8
    assert launcher.nodes == 1 and launcher.timeout_min > 0 and list(launcher.setup) == []


def test_named_sweep_shows_its_params(cli):
    proc = cli("sweep=nll_ablation", "--cfg", "hydra")
    assert proc.returncode == 0, proc.stderr
    assert dict(OmegaConf.create(proc.stdout).hydra.sweeper.params) == {"alpha": "0,1"}


def test_dashboard_dry_run_writes_a_spec_on_iteration(tmp_path):
    out = tmp_path / "workspace.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "irpo.dashboard",
            "--entity",
            "E",
            "--project",
            "P",
            "--group",
            "G",
            "--by",
            "alpha",
            "--dry-run",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    spec = json.loads(out.read_text())
    assert (spec["entity"], spec["project"]) == ("E", "P")
    sections = [s for s in spec["spec"]["section"]["panelBankConfig"]["sections"] if s["panels"]]
    panels = [p for s in sections for p in s["panels"]]
    metrics = {m for p in panels for m in p["config"]["metrics"]}
    assert {
        "iter/test_accuracy",
        "iter/maj@8",
        "iter/train_pass_at_n",
        "iter/pairs",
        "iter/train_dpo_loss",
        "iter/train_nll_loss",
        "iter/train_chosen_logps",
        "iter/train_rejected_logps",
    } <= metrics
    assert all(p["config"]["xAxis"] == "iteration" for p in panels)
    assert all(s["localPanelSettings"]["xAxis"] == "iteration" for s in sections)
    runset = spec["spec"]["section"]["runSets"][0]
    assert runset["grouping"] == [{"section": "config", "name": "alpha.value"}]
    assert runset["filters"]["filters"][0]["value"] == "G"


@pytest.mark.slow
def test_wheel_ships_conf_and_sweeps(tmp_path):
    """A non-editable install gets every YAML file: conf/ as irpo/conf, sweeps/ as irpo/sweeps."""
    # Built from a copy: setuptools writes build/ beside the sources.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "conf", "sweeps", "irpo"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(ROOT / name, src / name)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(src),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = set(zipfile.ZipFile(next(tmp_path.glob("irpo-*.whl"))).namelist())
    expected = {f"irpo/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")}
    expected |= {f"irpo/sweeps/{p.name}" for p in (ROOT / "sweeps").glob("*.yaml")}
    assert "irpo/conf/hydra/launcher/slurm.yaml" in expected and "irpo/sweeps/nll_ablation.yaml" in expected
    assert expected <= names, sorted(expected - names)
    assert "irpo/models/tiny_m0/model.safetensors" in names
