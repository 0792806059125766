"""Config schemas of the tasks: one dataclass per task, mirroring its constructor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING


@dataclass
class TaskConfig:
    _target_: str = MISSING
    train_size: Optional[int] = None  # first n train prompts each iteration (None: all)
    test_size: Optional[int] = None  # first n test problems for evaluation (None: all)
    max_new_tokens: int = 256


@dataclass
class ArithTaskConfig(TaskConfig):
    _target_: str = "irpo.tasks.arith.ArithTask"
    train_size: Optional[int] = 2000
    test_size: Optional[int] = 200
    max_new_tokens: int = 48
    num_terms: int = 3
    max_operand: int = 20
    operators: str = "+-"
    seed: int = 1234


# conf/task/<name>.yaml starts its defaults list with `<name>_schema`.
TASK_SCHEMAS = {"arith": ArithTaskConfig}
