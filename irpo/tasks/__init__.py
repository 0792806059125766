"""Tasks: the built-in `arith` and the paper's GSM8K, ARC-Challenge and MATH."""

from irpo.tasks.base import Example, Messages, Task, reward, subset

__all__ = ["Example", "Messages", "Task", "reward", "subset"]
