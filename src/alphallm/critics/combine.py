"""Combining critics into the search's ``evaluate_fn``.

A node's value is the weighted mean of the scores its critics could give (AlphaLLM sums value,
PRM and rollout-ORM scores with weight 1; a mean keeps the value in [0, 1] whichever critics
apply). Terminal nodes also record the exact verifier's outcome, which never enters the value
unless the ``oracle`` critic is given a weight.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from alphallm.critics.base import Critic, CriticInput
from alphallm.critics.rollout import RolloutCritic
from alphallm.search.types import EvalRequest, EvaluateFn, Evaluation
from alphallm.tasks.base import Problem, Task

__all__ = ["combine", "make_evaluate_fn"]

NEUTRAL = 0.5  # the value of a node no critic can judge


def combine(scores: Mapping[str, float | None], weights: Mapping[str, float]) -> float:
    """Weighted mean of the available scores (None and zero-weight critics are left out)."""
    total = weight_sum = 0.0
    for name, score in scores.items():
        weight = weights.get(name, 0.0)
        if score is None or weight <= 0 or math.isnan(score):
            continue
        total += weight * score
        weight_sum += weight
    return total / weight_sum if weight_sum else NEUTRAL


def _rejected(score: float | None, below: float) -> bool:
    """The pruning critic's verdict; a node it cannot judge (an ORM on a partial path) stays live."""
    return score is not None and not math.isnan(score) and score <= below


def make_evaluate_fn(
    task: Task,
    problems: Sequence[Problem],
    *,
    critics: Sequence[Critic],
    weights: Mapping[str, float],
    rollout: RolloutCritic | None = None,
    prune_with: str | None = "tool",
    prune_below: float = 0.0,
    seed: int = 0,
) -> EvaluateFn:
    """An ``evaluate_fn`` for trees whose roots are ``task.format_prompt(problems[b])``.

    ``weights`` maps critic names (and ``"rollout"``) to weights; every critic scores the whole
    batch in one call, and the rollout policy completes all non-terminal nodes in one call. A node
    that the critic ``prune_with`` scores at most ``prune_below`` is marked a dead end: with the
    hard verifier (0 or 1) that is a wrong step; with a learned critic, a soft verdict.
    """
    prompts = [task.format_prompt(p) for p in problems]
    calls = [0]

    def evaluate(requests: Sequence[EvalRequest]) -> list[Evaluation]:
        items = [
            CriticInput(problems[r.tree], r.state[len(prompts[r.tree]) :], r.option.terminal)
            for r in requests
        ]
        scores: dict[str, list[float | None]] = {c.name: c.score(items) for c in critics}
        rollouts = rollout.run(items, seed=seed + calls[0]) if rollout is not None else [() for _ in items]
        calls[0] += 1
        out = []
        for i, item in enumerate(items):
            node_scores = {name: values[i] for name, values in scores.items()}
            if rollout is not None and not item.terminal:
                judged = [r.score for r in rollouts[i] if r.score is not None]
                node_scores["rollout"] = float(np.mean(judged)) if judged else None
            verified = task.check(item.problem, item.solution) if item.terminal else None
            out.append(
                Evaluation(
                    value=combine(node_scores, weights),
                    verified=verified,
                    critics={k: v for k, v in node_scores.items() if v is not None},
                    rollouts=rollouts[i],
                    prune=_rejected(node_scores.get(prune_with) if prune_with else None, prune_below),
                )
            )
        return out

    return evaluate
