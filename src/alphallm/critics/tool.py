"""Tool critics: the task's own verifiers, run through the safe evaluator. No gold answers.

``ToolCritic`` checks every step of a (partial) solution with ``task.check_step`` (arith recomputes
each calculation; game24 checks each move's legality and that the final expression makes 24) and,
with ``reachability``, the state a partial solution reached with ``task.solvable_after`` (game24: can
the numbers left still make 24?). Both are exact; the second is the solver's verdict, so a search
that prunes with it explores solvable states only.
``OracleCritic`` uses ``task.check``, which may read the gold answer: for labels and training-time
search only, never for test-time decisions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from alphallm.critics.base import CriticInput, row_inputs
from alphallm.tasks.base import Task, solution_lines

__all__ = ["OracleCritic", "ToolCritic", "on_dead_ends", "row_scores", "step_verdicts"]


def step_verdicts(task: Task, item: CriticInput) -> list[bool | None]:
    """The step verifier's verdict on each complete line of the solution, answer line included."""
    verdicts, prefix = [], ""
    for line in solution_lines(item.solution):
        verdicts.append(task.check_step(item.problem, prefix, line))
        prefix += line + "\n"
    return verdicts


class ToolCritic:
    """1 if every checkable step is right, 0 if any is wrong (or, with ``reachability``, if the
    unfinished solution's state cannot be solved any more), None if nothing could be checked."""

    name: ClassVar[str] = "tool"

    def __init__(self, task: Task, *, reachability: bool = True) -> None:
        self.task = task
        self.reachability = reachability

    def score(self, items: Sequence[CriticInput]) -> list[float | None]:
        return [self._score(item) for item in items]

    def _score(self, item: CriticInput) -> float | None:
        verdicts = [v for v in step_verdicts(self.task, item) if v is not None]
        if not verdicts or not all(verdicts):
            return None if not verdicts else 0.0
        if item.terminal and not any(
            self.task.is_answer_line(line) for line in solution_lines(item.solution)
        ):
            # Ended with no answer (cut at the token or step limit): every move legal is no solution.
            # A policy that retries can write legal moves until its budget ends; scored 1 here, such a
            # rollout outranked the verified ones in eta-MCTS's read-out (benchmarks/README.md).
            return 0.0
        # A finished solution is judged by its answer line; a dead state only matters before it.
        dead = self.reachability and not item.terminal
        return 0.0 if dead and self.task.solvable_after(item.problem, item.solution) is False else 1.0


def row_scores(task: Task, rows: Sequence[Any], *, reachability: bool = True) -> list[float]:
    """The tool verifier's score of every label row (``train.labels.LabelRow``: prompt, solution,
    problem id as group), 0.5 where it cannot judge the text."""
    critic = ToolCritic(task, reachability=reachability)
    return [0.5 if score is None else score for score in critic.score(row_inputs(task, rows))]


def on_dead_ends(scores: Sequence[float], verdicts: Sequence[float]) -> list[float]:
    """``scores`` with 0 where the tool verifier's verdict is 0: the value the search backs up for a
    node its verifier pruned, whatever a learned critic says of it."""
    return [0.0 if verdict == 0.0 else score for score, verdict in zip(scores, verdicts, strict=True)]


class OracleCritic:
    """The exact outcome verifier (gold answer or rule) on complete solutions; None on partial ones."""

    name: ClassVar[str] = "oracle"

    def __init__(self, task: Task) -> None:
        self.task = task

    def score(self, items: Sequence[CriticInput]) -> list[float | None]:
        out: list[float | None] = []
        for item in items:
            verdict = self.task.check(item.problem, item.solution) if item.terminal else None
            out.append(None if verdict is None else float(verdict))
        return out
