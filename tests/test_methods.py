"""Methods as objects (irpo/methods.py): what each built-in answers, its objective, a method
from a module outside irpo, and runs recorded before methods were objects."""

import ast
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from irpo import methods
from irpo.cli import conf_dir, register_all
from irpo.errors import ConfigError
from irpo.loop import stage_config
from irpo.loss import dpo_nll_loss
from irpo.methods import DPO, GRPO, RLOO, BatchLogps, DrGRPO, GoldSFT, Items, WinnerSFT, ZeroShot
from irpo.run import compat
from irpo.spec import build

ROOT = Path(__file__).resolve().parents[1]
BEFORE = ROOT / "tests" / "fixtures" / "run_before_methods"
BUILT_IN = {
    "irpo": DPO,
    "dpo": DPO,
    "sft_chosen": WinnerSFT,
    "sft_gold": GoldSFT,
    "zero_shot": ZeroShot,
    "grpo": GRPO,
    "dr_grpo": DrGRPO,
    "rloo": RLOO,
}


@pytest.fixture(scope="module")
def composer():
    register_all()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        yield lambda *overrides: compose("config", overrides=list(overrides))


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_each_method_yaml_builds_its_object(composer, name):
    method = methods.build(composer(f"method={name}"))
    assert type(method) is BUILT_IN[name] and method.name == name
    expected = {
        "irpo": (True, True, True, True),
        "dpo": (True, True, True, True),
        "sft_chosen": (True, True, False, False),
        "sft_gold": (True, False, False, False),
        "zero_shot": (False, False, False, False),
        "grpo": (True, True, False, True),
        "dr_grpo": (True, True, False, True),
        "rloo": (True, True, False, True),
    }[name]
    assert (method.trains, method.samples, method.paired, method.reference) == expected
    if name in ("irpo", "dpo"):
        assert (method.alpha, method.beta) == ((1.0 if name == "irpo" else 0.0), 0.1)


def test_sample_true_makes_a_method_sample(composer):
    assert methods.build(composer("method=sft_gold", "+method.sample=true")).samples


@pytest.mark.parametrize(
    "override, message",
    [
        ("+method.gamma=1", "method.gamma: Key 'gamma' not in 'DPO'"),
        ("method.alpha=x", "method.alpha: Value 'x' of type 'str' could not be converted to Float"),
        ("method._target_=irpo.methods.Nope", "method._target_=irpo.methods.Nope cannot be imported"),
        ("method._target_=irpo.loss.LossParts", "is not a dataclass subclassing irpo.methods.Method"),
        ("beta=0", "beta must be > 0 for the DPO term, got 0.0"),
    ],
)
def test_a_wrong_method_key_or_value_is_one_line_naming_it(composer, override, message):
    with pytest.raises(ConfigError) as err:
        methods.build(composer(override))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_dpo_objective_is_eq1_and_its_metrics():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(5, generator=g) * 10 for _ in range(4))
    lengths = torch.tensor([3, 7, 1, 12, 5])
    loss, metrics = DPO("irpo", alpha=0.7, beta=0.2).objective(
        BatchLogps(pc, pr, lengths, lengths + 1), BatchLogps(rc, rr, lengths, lengths + 1)
    )
    parts = dpo_nll_loss(pc, pr, rc, rr, lengths, 0.2, 0.7)
    assert (
        torch.equal(loss, parts.loss)
        and torch.equal(metrics["dpo_loss"], parts.dpo)
        and torch.equal(metrics["nll_loss"], parts.nll)
    )
    margin = 0.2 * ((pc - rc) - (pr - rr))
    assert (
        torch.allclose(metrics["reward_margin"], margin.mean())
        and metrics["reward_accuracy"] == (margin > 0).float().mean()
    )


def test_sft_objective_is_the_length_normalised_nll():
    logps, lengths = torch.tensor([-6.0, -2.0]), torch.tensor([3, 4])
    loss, metrics = WinnerSFT("sft_chosen").objective(BatchLogps(logps, None, lengths, None), None)
    assert loss.item() == pytest.approx((2.0 + 0.5) / 2) and set(metrics) == {"loss", "nll_loss", "chosen_logps"}


class Data:
    def pairs(self):
        return Items(["p1", "p1", "p1", "p2"], ["w1", "w1", "w2", "w3"], ["l1", "l2", "l1", "l3"])

    def golds(self):
        return Items(["p1", "p2"], ["g1", "g2"], None)


def test_items_each_method_trains_on():
    assert DPO("irpo").items(Data()) == Data().pairs()
    assert WinnerSFT("sft_chosen").items(Data()) == Items(
        ["p1", "p1", "p2"], ["w1", "w2", "w3"], None
    )  # each winner once
    assert GoldSFT("sft_gold").items(Data()) == Data().golds()
    assert [m.items_per_prompt(8, 4) for m in (DPO("a"), WinnerSFT("b"), GoldSFT("c"), ZeroShot("d"))] == [4, 4, 1, 0]


@pytest.mark.parametrize(
    "train_on, name",
    [("pairs", "irpo"), ("pairs", "dpo"), ("winners", "sft_chosen"), ("gold", "sft_gold"), ("none", "zero_shot")],
)
def test_a_stage_recorded_with_train_on_reads_as_todays_method(composer, train_on, name):
    """The train stage's values as recorded before methods were objects equal today's for the
    same method, so a finished stage holds on resume."""
    cfg = composer(f"method={name}")
    today = stage_config(build(cfg), 1, "train")
    recorded = {k: v for k, v in today.items() if not k.startswith("method.")}
    recorded |= {"method.name": name, "method.train_on": train_on, "method.sample": None}
    assert compat.recorded_values(recorded) == today
    assert compat.recorded_values(today) is today


def test_method_kinds_are_asked_of_the_method_only():
    """No module but irpo/methods.py names what a method trains on or compares a method's
    name or type: the loop, the datamodule, the module and the planner ask the object (only
    irpo/run/compat.py reads what runs recorded before methods were objects)."""
    for path in sorted((ROOT / "irpo").rglob("*.py")):
        if path.name == "methods.py" or path.relative_to(ROOT).as_posix() == "irpo/run/compat.py":
            continue
        source = path.read_text()
        assert "train_on" not in source, path
        for node in ast.walk(ast.parse(source)):
            # a method's name or kind compared with a literal: `method.name == "irpo"`
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                literal = [
                    s
                    for s in sides
                    if any(isinstance(c, ast.Constant) and isinstance(c.value, str) for c in ast.walk(s))
                    and all(isinstance(c, (ast.Constant, ast.Tuple, ast.List, ast.Set, ast.Load)) for c in ast.walk(s))
                ]
                assert not (literal and "method" in ast.unparse(node)), f"{path}: {ast.unparse(node)}"
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "isinstance":
                assert "method" not in ast.unparse(node), f"{path}: {ast.unparse(node)}"


PIECES = '''
from dataclasses import dataclass
from typing import ClassVar

import torch

from irpo.methods import Method
from irpo.tasks.arith import ArithTask


class CloseTask(ArithTask):
    """arith scored by a verifier of the user's: a wrong answer earns credit for being close."""

    name = "close"

    def __init__(self, tolerance: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.tolerance = tolerance

    def partial_credit(self, completion, example):
        answer = self.extract_answer(completion)
        return 0.0 if answer is None else 0.9 * max(0.0, 1 - abs(int(answer) - int(example.answer)) / self.tolerance)


@dataclass
class Hinge(Method):
    """SLiC's hinge on the pair's log-ratio margin against the reference (Zhao et al. 2023)."""

    beta: float = 0.1
    delta: float = 1.0
    paired: ClassVar[bool] = True
    reference: ClassVar[bool] = True
    items_name: ClassVar[str] = "pairs"

    def items(self, data):
        return data.pairs()

    def objective(self, policy, reference):
        margin = (policy.chosen - reference.chosen) - (policy.rejected - reference.rejected)
        loss = torch.relu(self.delta - self.beta * margin).mean()
        return loss, {"loss": loss, "hinge_margin": margin.mean()}
'''


def test_a_task_reward_and_method_from_a_module_outside_irpo_run_an_iteration(tmp_path, cli):
    """The user's own task (with its own reward: a verifier's partial credit) and objective,
    from their module and config directory, through planning, the loop and the report."""
    (tmp_path / "my_pieces.py").write_text(PIECES)
    for group, text in {
        "method/hinge.yaml": "# @package _global_\nmethod:\n  _target_: my_pieces.Hinge\n  name: hinge\n  beta: ${beta}\n  delta: 2.0\n",
        "task/close.yaml": "_target_: my_pieces.CloseTask\ntrain_size: 16\ntest_size: 8\ntolerance: 4\nmax_new_tokens: 48\n",
    }.items():
        (tmp_path / "conf" / group).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "conf" / group).write_text(text)
    run = tmp_path / "run"
    args = [
        "task=close",
        "method=hinge",
        "pair_margin=0.2",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        f"hydra.run.dir={run}",
        "iterations=1",
        "num_samples=4",
        "eval.maj_k=0",
        "logger=none",
        "trainer.batch_size=4",
        "trainer.progress_bar=false",
        "trainer.log_every_n_steps=1",
    ]
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    plan = cli(*args, "plan=true", env=env)
    assert plan.returncode == 0 and "method     hinge (Hinge): trains on pairs, beta=0.1, delta=2.0" in plan.stdout, (
        plan.stderr[-3000:]
    )
    proc = cli(*args, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "iter_0" / "metrics.json").read_text())
    assert metrics["pairs"] > 0 and "train_hinge_margin" in metrics and "train_dpo_loss" not in metrics
    rewards = {json.loads(line)["reward"] for line in (run / "iter_0" / "generations.jsonl").read_text().splitlines()}
    assert any(0 < r < 1 for r in rewards)  # the verifier's partial credit
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["iter_0/train"]["config"]["method._target_"] == "my_pieces.Hinge"
    assert manifest["stages"]["iter_0/train"]["config"]["method.delta"] == 2.0
    assert "iter_0/reference" in manifest["stages"]  # it asked for the reference's log-probs
    assert "irpo report: " in proc.stdout and (run / "summary.json").exists()


def before_methods(tmp_path: Path) -> tuple[Path, list[str]]:
    run = tmp_path / "run"
    shutil.copytree(BEFORE, run)
    overrides = [str(o) for o in OmegaConf.load(run / ".hydra" / "overrides.yaml")]
    return run, [*overrides, f"hydra.run.dir={run}", "trainer.progress_bar=false"]


def stage_events(run: Path) -> list[dict]:
    return [e for e in map(json.loads, (run / "events.jsonl").read_text().splitlines()) if "stage" in e]


def test_a_run_recorded_before_methods_resumes_without_redoing_a_stage(tmp_path, cli):
    run, overrides = before_methods(tmp_path)
    assert OmegaConf.load(run / ".hydra" / "config.yaml").method.train_on == "pairs"
    manifest, events = json.loads((run / "manifest.json").read_text()), stage_events(run)
    proc = cli(*overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert stage_events(run) == events  # nothing started, reused or finished again
    assert json.loads((run / "manifest.json").read_text())["stages"] == manifest["stages"]
    assert "test accuracy by iteration 0.438 0.500" in proc.stdout
    # and a changed value is still refused, named in today's keys
    proc = cli(*overrides, "alpha=0.5")
    assert proc.returncode != 0 and "alpha, method.alpha" in proc.stderr and stage_events(run) == events


def test_a_run_recorded_before_methods_reports(tmp_path):
    import subprocess

    run, _ = before_methods(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "irpo.report", str(run)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test accuracy by iteration 0.438 0.500" in proc.stdout
    rows = json.loads((run / "summary.json").read_text())
    assert rows  # the summary names the run's iterations


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["method=simpo", "trainer.reference=live"],
            "trainer.reference=live keeps a reference model that method simpo never asks for",
        ),
        (["method=irpo", "+method.sample=false"], "method.sample=false: method irpo trains on the iteration's samples"),
    ],
)
def test_a_method_refuses_settings_it_cannot_run_under(composer, overrides, message):
    from irpo.config import validate

    with pytest.raises(ConfigError, match=message):
        validate(composer(*overrides))


def test_sft_tolerates_a_live_reference_it_does_not_use(composer):
    from irpo.config import validate

    validate(composer("method=sft_chosen", "trainer.reference=live"))
