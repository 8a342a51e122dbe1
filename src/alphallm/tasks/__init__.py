"""Built-in tasks: problems by split, prompt formats, answers and verifiers."""

from __future__ import annotations

from alphallm.errors import UserError
from alphallm.tasks.arith import ArithTask
from alphallm.tasks.base import SPLITS, Problem, Task, load_problems
from alphallm.tasks.game24 import Game24Task
from alphallm.tasks.gsm8k import GSM8KTask
from alphallm.tasks.math import MATHTask

__all__ = [
    "SPLITS",
    "TASKS",
    "ArithTask",
    "GSM8KTask",
    "Game24Task",
    "MATHTask",
    "Problem",
    "Task",
    "get_task",
    "load_problems",
]

TASKS: dict[str, type[Task]] = {
    "arith": ArithTask,
    "game24": Game24Task,
    "gsm8k": GSM8KTask,
    "math": MATHTask,
}


def get_task(name: str) -> Task:
    """A task by name; an unknown name is a one-line UserError listing the known ones."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(sorted(TASKS))}")
    return TASKS[name]()
