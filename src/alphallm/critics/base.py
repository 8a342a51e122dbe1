"""The critic contract: score a batch of (problem, partial or complete solution) pairs in [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from alphallm.tasks.base import Problem

__all__ = ["Critic", "CriticInput"]


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
