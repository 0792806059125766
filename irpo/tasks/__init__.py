"""Tasks: the built-in `arith` and the paper's GSM8K, ARC-Challenge and MATH."""

from irpo.tasks.base import Example, Messages, Task, reward
from irpo.tasks.subsets import subset

__all__ = ["Example", "Messages", "Task", "reward", "subset"]
