"""Read-outs: which solution a finished tree answers with, and which rule chose it.

Candidates are the tree's terminal nodes and, optionally, the completed fast rollouts (a rollout
that reached an answer is a solution the search paid for). Every choice records its read-out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from alphallm.search.tree import ROOT, Tree

__all__ = ["READOUTS", "Choice", "best_value", "candidates", "most_visited", "read_out", "vote"]

READOUTS = ("auto", "most_visited", "best_value", "vote", "majority")


@dataclass(frozen=True)
class Choice:
    """A solution chosen from a tree.

    Attributes:
        solution: the text after the prompt.
        node: the tree node it ends at (or the node a rollout started from).
        readout: the rule that chose it.
        score: the value it was chosen by.
        rollout: index of the rollout at ``node`` that supplied the text, if any.
    """

    solution: str
    node: int
    readout: str
    score: float
    rollout: int | None = None


def candidates(tree: Tree, b: int, *, include_rollouts: bool = True) -> list[Choice]:
    """Every complete solution in tree ``b``, scored by its node's evaluation (or its rollout's)."""
    out = []
    for node in tree.terminals(b):
        value = tree.raw_value[b, node]
        out.append(
            Choice(tree.solution(b, int(node)), int(node), "", 0.0 if np.isnan(value) else float(value))
        )
    if include_rollouts:
        for node in range(int(tree.num_nodes[b])):
            evaluation = tree.evaluations[b][node]
            if evaluation is None:
                continue
            prefix = tree.solution(b, node)
            for i, rollout in enumerate(evaluation.rollouts):
                score = 0.0 if rollout.score is None else float(rollout.score)
                out.append(Choice(prefix + rollout.text, node, "", score, rollout=i))
    return out


def most_visited(tree: Tree, b: int) -> Choice | None:
    """Follows the most-visited child (ties: higher Q) from the root; None unless it ends at a terminal."""
    node = ROOT
    while not tree.terminal[b, node]:
        kids = tree.child_ids(b, node)
        if kids.size == 0:
            return None
        node = int(max(kids, key=lambda c: (tree.visits[b, c], tree.q(b, int(c)))))
    return Choice(tree.solution(b, node), node, "most_visited", tree.q(b, node))


def best_value(tree: Tree, b: int, *, include_rollouts: bool = True) -> Choice | None:
    """The complete solution with the highest evaluation (ties: the earlier one)."""
    pool = candidates(tree, b, include_rollouts=include_rollouts)
    if not pool:
        return None
    best = max(pool, key=lambda c: c.score)
    return Choice(best.solution, best.node, "best_value", best.score, best.rollout)


def vote(
    tree: Tree,
    b: int,
    answer_fn: Callable[[str], str | None],
    *,
    weighted: bool = True,
    include_rollouts: bool = True,
) -> Choice | None:
    """Votes over final answers, weighted by evaluation (or one vote each: self-consistency)."""
    pool: list[tuple[Choice, str]] = []
    for choice in candidates(tree, b, include_rollouts=include_rollouts):
        answer = answer_fn(choice.solution)
        if answer is not None:
            pool.append((choice, answer))
    if not pool:
        return None
    totals: dict[str, float] = defaultdict(float)
    for choice, answer in pool:
        totals[answer] += choice.score if weighted else 1.0
    winner = max(totals, key=lambda a: totals[a])  # dicts keep insertion order: ties go to the first seen
    best = max((c for c, a in pool if a == winner), key=lambda c: c.score)
    name = "vote" if weighted else "majority"
    return Choice(best.solution, best.node, name, totals[winner], best.rollout)


def read_out(tree: Tree, b: int, method: str, answer_fn: Callable[[str], str | None]) -> Choice | None:
    """Applies a read-out by name; ``auto`` is the most-visited path, else the best-valued solution."""
    if method == "most_visited":
        return most_visited(tree, b)
    if method == "best_value":
        return best_value(tree, b)
    if method == "vote":
        return vote(tree, b, answer_fn)
    if method == "majority":
        return vote(tree, b, answer_fn, weighted=False, include_rollouts=False)
    if method == "auto":
        return most_visited(tree, b) or best_value(tree, b)
    raise ValueError(f"unknown read-out {method!r}; expected one of {READOUTS}")
