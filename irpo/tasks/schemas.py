"""Config schemas of the tasks: one dataclass per task, mirroring its constructor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING


@dataclass
class TaskConfig:
    _target_: str = MISSING
    # A random draw of n rows, stratified by subject where the task has them (irpo/tasks/subsets.py).
    train_size: Optional[int] = None  # n train prompts each iteration (None: all)
    test_size: Optional[int] = None  # n test problems for evaluation (None: all)
    max_new_tokens: int = 256
    seed: int = 0  # draws the train_size / test_size subsets, the same on every run and rank


@dataclass
class ArithTaskConfig(TaskConfig):
    _target_: str = "irpo.tasks.arith.ArithTask"
    train_size: Optional[int] = 2000
    test_size: Optional[int] = 200
    max_new_tokens: int = 48
    num_terms: int = 3
    max_operand: int = 20
    operators: str = "+-"
    seed: int = 1234  # generates the problems: train_size and test_size are how many
    validation_size: int = (
        1000  # problems neither test, the loop's train prompts nor M_0's SFT drew (selection.val_from=validation)
    )
    # A wrong answer's reward: this x the share of gold steps right before its first wrong one;
    # None: 0, the binary reward (None, not 0, so that runs recorded before it still resume).
    step_credit: Optional[float] = None
    # Every split leaves out the problems the M_0s shipped in irpo.models were fine-tuned on;
    # a model directory built by `python -m irpo.tiny_m0 --out <dir>`: its problems too.
    unseen_by: Optional[str] = None


@dataclass
class GSM8KTaskConfig(TaskConfig):
    _target_: str = "irpo.tasks.gsm8k.GSM8KTask"
    # A .jsonl/.json/.parquet file (every split) or a directory of split files (train.jsonl,
    # test.jsonl); None: the hub (openai/gsm8k, main).
    data_path: Optional[str] = None
    max_new_tokens: int = 512


@dataclass
class ARCTaskConfig(TaskConfig):
    _target_: str = "irpo.tasks.arc.ARCTask"
    # As for GSM8K, with validation.jsonl too; None: the hub (allenai/ai2_arc, ARC-Challenge).
    data_path: Optional[str] = None
    include_easy: bool = False  # train also on ARC-Easy's train split (easy_train.jsonl), as the paper does
    max_new_tokens: int = 512


@dataclass
class MATHTaskConfig(TaskConfig):
    _target_: str = "irpo.tasks.math.MATHTask"
    # As for GSM8K; None: the hub (EleutherAI/hendrycks_math, all seven subject configs).
    data_path: Optional[str] = None
    max_new_tokens: int = 1024
    check_timeout_s: int = 5  # math-verify's limit per parse and per comparison


# conf/task/<name>.yaml starts its defaults list with `<name>_schema`.
TASK_SCHEMAS = {"arith": ArithTaskConfig, "gsm8k": GSM8KTaskConfig, "arc": ARCTaskConfig, "math": MATHTaskConfig}
