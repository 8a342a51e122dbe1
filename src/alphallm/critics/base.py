"""The critic contract: score a batch of (problem, partial or complete solution) pairs in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from alphallm.errors import UserError
from alphallm.tasks.base import Problem, Task

__all__ = ["Critic", "CriticInput", "row_inputs"]


@dataclass(frozen=True)
class CriticInput:
    """A search state to judge: ``solution`` is the text after the prompt, new option included."""

    problem: Problem
    solution: str
    terminal: bool


@runtime_checkable
class Critic(Protocol):
    """Scores in [0, 1]; None where the critic cannot judge (an ORM on a partial solution, say)."""

    @property
    def name(self) -> str:
        """The key of this critic's weight and of its scores in the tree."""
        ...

    def score(self, items: Sequence[CriticInput]) -> list[float | None]: ...


def row_inputs(task: Task, rows: Sequence[Any]) -> list[CriticInput]:
    """What a critic is asked of label rows (``train.labels.LabelRow``: prompt, solution, problem
    id as group): each row's problem recovered from its prompt, without its gold answer; a row is
    complete when it states an answer."""
    items = []
    for row in rows:
        problem = task.problem_from_prompt(row.prompt, row.group)
        if problem is None:
            raise UserError(f"tree of problem {row.group}: its root is not a {task.name} prompt")
        finished = task.extract_answer(row.solution) is not None
        items.append(CriticInput(problem, row.solution, terminal=finished))
    return items
