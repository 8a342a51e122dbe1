"""The small pure functions of eta-MCTS: selection scores, node importance, widening, similarity."""

from __future__ import annotations

import math

import numpy as np
from rapidfuzz import fuzz

__all__ = [
    "allowed_children",
    "importance",
    "priors_from_logprobs",
    "puct_scores",
    "similarity",
    "uct_scores",
]


def uct_scores(q: np.ndarray, visits: np.ndarray, parent_visits: float, *, c: float) -> np.ndarray:
    """UCT on backed-up means: ``Q(c) + c * sqrt(ln N(parent) / N(c))`` (AlphaLLM's code; the paper
    prints ``sqrt(2 ln(N/n))``). Unvisited children score +inf.  # q, visits: (K,)"""
    visits = visits.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        bonus = c * np.sqrt(math.log(max(parent_visits, 1.0)) / visits)
    return np.where(visits > 0, q + bonus, np.inf)


def puct_scores(
    q: np.ndarray, visits: np.ndarray, prior: np.ndarray, parent_visits: float, *, c: float
) -> np.ndarray:
    """AlphaZero's PUCT: ``Q(c) + c * P(c) * sqrt(N(parent)) / (1 + N(c))``."""
    return q + c * prior * math.sqrt(max(parent_visits, 1.0)) / (1.0 + visits)


def priors_from_logprobs(logprobs: np.ndarray) -> np.ndarray:
    """Sibling priors: a softmax over the options' total log-probabilities."""
    if logprobs.size == 0:
        return logprobs
    shifted = np.exp(logprobs - logprobs.max())
    return shifted / shifted.sum()


def importance(child_values: np.ndarray, node_value: float | None) -> float:
    """``I(s) = max_i |v(s, o_i) - v(s)|`` (AlphaLLM eq. 4). Without an evaluation of ``s`` itself
    (the root), ``v(s)`` is the mean of its children's values, as in the released code."""
    if child_values.size == 0:
        return 0.0
    reference = float(child_values.mean()) if node_value is None or math.isnan(node_value) else node_value
    return float(np.abs(child_values - reference).max())


def allowed_children(
    node_importance: float,
    depth: int,
    *,
    alpha: float,
    c_min_root: int,
    c_max_root: int,
    c_min: int,
    c_max: int,
) -> int:
    """``n(s) = max(c_min(t), min(floor(alpha * I(s)) + 1, c_max(t)))`` with depth-dependent bounds."""
    low, high = (c_min_root, c_max_root) if depth == 0 else (c_min, c_max)
    return max(low, min(math.floor(alpha * node_importance) + 1, high))


def similarity(a: str, b: str) -> float:
    """Normalised edit similarity in [0, 1] (1 = identical), from rapidfuzz's Indel ratio."""
    return fuzz.ratio(a, b) / 100.0
