"""Critics: tool verifiers, fast rollouts, and their combination into the search's evaluate_fn."""

from __future__ import annotations

from alphallm.critics.base import Critic, CriticInput
from alphallm.critics.combine import combine, make_evaluate_fn
from alphallm.critics.rollout import RolloutCritic
from alphallm.critics.tool import OracleCritic, ToolCritic

__all__ = [
    "Critic",
    "CriticInput",
    "OracleCritic",
    "RolloutCritic",
    "ToolCritic",
    "combine",
    "make_evaluate_fn",
]
