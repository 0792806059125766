"""The run is resolved once (irpo/spec.py): after the spec is built nothing reads the composed
config, kinds of things answer for themselves in their own homes, and each stage's files are
named once, in its declaration."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from irpo.loop import iteration_stages

ROOT = Path(__file__).resolve().parents[1]
IRPO = ROOT / "irpo"

# Runs `python -m irpo <argv>` with every node of the composed config made to raise on any
# access once irpo.spec.build has returned: a module that reads the DictConfig after the spec
# is built fails the run.
POISONED = r"""
import sys
from omegaconf import DictConfig, ListConfig
import irpo.loop, irpo.spec

class Read(Exception):
    pass

def poisoned(kind):
    def refuse(self, *args, **kwargs):
        raise Read(f"the composed config was read after the run spec was built")
    names = ("__getattr__", "__getitem__", "__setattr__", "__setitem__", "__iter__", "__contains__", "__len__", "get", "items",
             "keys", "values", "_get_node", "__eq__", "__repr__", "__str__")
    return type(f"Poisoned{kind.__name__}", (kind,), {name: refuse for name in names})

def poison(node):
    for child in list(node._content.values() if isinstance(node, DictConfig) else node._content):
        if isinstance(child, (DictConfig, ListConfig)):
            poison(child)
    object.__setattr__(node, "__class__", poisoned(type(node)))

build = irpo.spec.build
def build_then_poison(cfg):
    spec = build(cfg)
    poison(cfg)
    return spec
irpo.loop.build_spec = build_then_poison
sys.argv = ["irpo", *sys.argv[1:]]
from irpo.__main__ import main
main()
"""

SMALL = [
    "task.train_size=16",
    "task.test_size=16",
    "iterations=1",
    "num_samples=4",
    "eval.maj_k=2",
    "trainer.max_steps=2",
    "trainer.progress_bar=false",
    "selection.val_size=8",
    "selection.val_every_n_steps=1",
]


def poisoned_run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", POISONED, *argv], capture_output=True, text=True, cwd=ROOT, timeout=900
    )


def test_a_plan_reads_no_config_after_the_spec_is_built(tmp_path):
    proc = poisoned_run(
        "plan=true",
        "model=llama2_70b",
        "trainer=fsdp",
        "generator=vllm",
        "task=gsm8k",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "== training memory per rank" in proc.stdout and "fsdp: 16 B/param" in proc.stdout


@pytest.mark.slow
def test_a_run_and_its_report_read_no_config_after_the_spec_is_built(tmp_path):
    """The default run, made small, with checkpoint selection and W&B offline: every stage,
    the logger, the record of the config in .hydra/ and the report at the end."""
    run = tmp_path / "run"
    proc = poisoned_run(*SMALL, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Read" not in proc.stderr
    assert (run / ".hydra" / "config.yaml").read_text().startswith("task:")
    assert (run / "summary.json").exists() and (run / "iter_0" / "selection.json").exists()


def imported_names(path: Path) -> set[str]:
    return {
        alias.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def test_the_composed_config_is_imported_by_four_modules_at_most():
    readers = sorted(str(p.relative_to(ROOT)) for p in IRPO.rglob("*.py") if "DictConfig" in imported_names(p))
    assert len(readers) <= 4, readers
    assert "irpo/spec.py" in readers and "irpo/config.py" in readers


def compared_literals(path: Path) -> list[str]:
    """String constants a module compares with (==, !=, in, not in) or tests a string's end by."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            out += [
                c.value
                for side in (node.left, *node.comparators)
                for c in ast.walk(side)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            ]
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("endswith", "startswith")
        ):
            out += [
                c.value
                for arg in node.args
                for c in ast.walk(arg)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            ]
    return out


def test_no_strategy_name_is_compared_outside_the_trainers_home():
    from irpo.training.trainers import TRAINERS

    names = set(TRAINERS) - {"auto"}  # "auto" is also a device, a resume mode, a CPU choice
    for path in IRPO.rglob("*.py"):
        if path != IRPO / "training" / "trainers.py":
            assert not names & set(compared_literals(path)), path


def test_no_generator_class_is_named_and_no_replica_size_read_outside_generation():
    for path in IRPO.rglob("*.py"):
        if (IRPO / "generation") in path.parents:
            continue
        assert not [s for s in compared_literals(path) if s.endswith("Generator")], path
        tree = ast.parse(path.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "tensor_parallel_size"], (
            path
        )
        assert not [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call)
            and "tensor_parallel_size" in [c.value for a in n.args for c in ast.walk(a) if isinstance(c, ast.Constant)]
        ], path


def test_each_stage_names_its_files_once():
    """Every file a stage writes is named by its declaration alone: no two stages claim one,
    and no module builds a path from the name spelled out again (`it / "pairs.jsonl"`)."""
    files = [f for stage in iteration_stages() for f in stage.files]
    assert len(files) == len(set(files))
    for path in IRPO.rglob("*.py"):
        spelled = [
            n.right.value
            for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) and isinstance(n.right, ast.Constant)
        ]
        assert not set(spelled) & set(files), (path, set(spelled) & set(files))


def test_a_generation_backend_answers_for_itself():
    from irpo.generation.schemas import HFGeneratorConfig, VLLMGeneratorConfig

    assert HFGeneratorConfig().replica_size == 1 and VLLMGeneratorConfig(tensor_parallel_size=4).replica_size == 4
    assert (
        VLLMGeneratorConfig().engine_budget(100, 90, on_gpu=True) == 90
        and HFGeneratorConfig().engine_budget(100, 80, on_gpu=True) == 80
    )
    assert VLLMGeneratorConfig(gpu_memory_utilization=0.5).engine_budget(100, 90, on_gpu=True) == 50


BACKEND = """
from dataclasses import dataclass

from irpo.generation.hf import HFGenerator
from irpo.generation.schemas import GeneratorConfig


@dataclass
class CountingConfig(GeneratorConfig):
    _target_: str = "my_backend.CountingGenerator"
    log: str = "generator_calls.log"
    engines_span: int = 1

    @property
    def replica_size(self) -> int:
        return self.engines_span


class CountingGenerator(HFGenerator):
    schema = CountingConfig

    def __init__(self, model_dir, decoding, log, engines_span, **settings):
        super().__init__(model_dir, decoding, **settings)
        self.log = log

    def greedy(self, prompts):
        with open(self.log, "a") as f:
            f.write(f"greedy {len(prompts)}\\n")
        return super().greedy(prompts)
"""


@pytest.mark.slow
def test_a_generation_backend_of_the_users_own_runs_an_iteration(tmp_path):
    """docs/extending.md's backend, from a module and a config folder outside irpo: its schema
    types its YAML, answers the replica size, and the loop evaluates and samples through it."""
    (tmp_path / "my_backend.py").write_text(BACKEND)
    log = tmp_path / "calls.log"
    (tmp_path / "conf" / "generator").mkdir(parents=True)
    (tmp_path / "conf" / "generator" / "counting.yaml").write_text(
        f"_target_: my_backend.CountingGenerator\nlog: {log}\n"
    )
    small = [
        "task.train_size=8",
        "task.test_size=8",
        "iterations=1",
        "num_samples=4",
        "eval.maj_k=0",
        "trainer.max_steps=1",
    ]
    args = [
        "generator=counting",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        *small,
        "trainer.progress_bar=false",
        "logger=none",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cli = [sys.executable, "-m", "irpo", *args]
    plan = subprocess.run(
        [*cli, "plan=true", f"hydra.run.dir={tmp_path / 'plan'}"], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert plan.returncode == 0 and "generator CountingGenerator" in plan.stdout, plan.stderr[-3000:]
    wrong = subprocess.run(
        [*cli, "generator.engines_span=two", f"hydra.run.dir={tmp_path / 'wrong'}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert wrong.returncode != 0 and "engines_span" in wrong.stderr
    run = tmp_path / "run"
    proc = subprocess.run(
        [*cli, f"hydra.run.dir={run}"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert log.read_text().count("greedy") >= 2  # M_0's and M_1's test problems
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["iter_0/generate"]["config"]["generator._target_"] == "my_backend.CountingGenerator"
