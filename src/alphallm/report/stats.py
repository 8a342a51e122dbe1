"""Is a change in accuracy more than noise? Test-split accuracies of consecutive rounds are measured
on the same problems, so their difference is paired: its standard error is that of the per-problem
differences, far smaller than two independent binomial errors when most problems do not change."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from itertools import pairwise
from typing import Any

__all__ = ["binomial_se", "noise_drops", "paired_change", "round_changes", "share_by_problem"]


def binomial_se(accuracy: float, problems: int) -> float:
    """Standard error of an accuracy measured on ``problems`` independent problems."""
    return math.sqrt(max(0.0, accuracy * (1.0 - accuracy)) / problems) if problems > 0 else 0.0


def share_by_problem(outcomes: Iterable[tuple[str, bool | None]]) -> dict[str, float]:
    """Each problem's share of right solutions, from (problem id, correct) of every solution: 1 or 0
    for a search or a greedy decoding, a fraction for ``n`` samples a problem; ``paired_change``'s input."""
    right: dict[str, int] = {}
    total: dict[str, int] = {}
    for pid, correct in outcomes:
        right[pid] = right.get(pid, 0) + int(bool(correct))
        total[pid] = total.get(pid, 0) + 1
    return {pid: right[pid] / total[pid] for pid in total}


def paired_change(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """Accuracy before and after on the problems both measured (by id), the mean change, its standard
    error, and z = change / se. Scores are per problem: 0 or 1 for a single answer, a fraction for
    sampled ones."""
    shared = [pid for pid in before if pid in after]
    if not shared:
        raise ValueError("no problem was measured both times")
    diffs = [after[pid] - before[pid] for pid in shared]
    means = {
        "before": sum(before[pid] for pid in shared) / len(shared),
        "after": sum(after[pid] for pid in shared) / len(shared),
    }
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / max(1, n - 1))
    se = sd / math.sqrt(n)
    # Every problem changed alike (se 0): no noise at all, so any change is certain. JSON files get
    # null for an infinite z (``io.dumps``); se 0 says why.
    z = mean / se if se > 0 else math.copysign(math.inf, mean) if mean else 0.0
    return {**means, "change": mean, "se": se, "z": z, "problems": n}


def round_changes(metrics: list[dict[str, Any]], method: str) -> dict[int, dict[str, float]]:
    """Each round's change in ``method``'s test accuracy from the round before, paired over problems;
    rounds whose records carry no per-problem outcomes (``solved``; older runs) are left out."""
    out = {}
    for before, after in pairwise(metrics):
        a, b = _solved(before, method), _solved(after, method)
        if a and b:
            out[after["round"]] = paired_change(a, b)
    return out


def _solved(record: dict[str, Any], method: str) -> Any:
    """``method``'s per-problem outcomes in a round's record (None: none kept, or no such method)."""
    value = record.get(method)
    return value.get("solved") if isinstance(value, dict) else None


def noise_drops(metrics: list[dict[str, Any]], method: str, z: float = 2.0) -> list[int]:
    """The rounds whose accuracy fell from the round before by more than ``z`` standard errors."""
    return [k for k, change in round_changes(metrics, method).items() if change["z"] < -z]
