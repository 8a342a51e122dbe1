"""Quality measures of critics (pure NumPy): AUC, rank correlation, calibration."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["auc", "auc_within", "brier", "expected_calibration_error", "spearman", "spearman_ceiling"]


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), 1-based."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), np.float64)
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def auc(scores: Sequence[float], labels: Sequence[float]) -> float:
    """Area under the ROC curve (Mann-Whitney U); NaN when only one class is present."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels, np.float64) >= 0.5
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = _ranks(s)
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def auc_within(scores: Sequence[float], labels: Sequence[float], groups: Sequence[str]) -> float:
    """AUC over the (positive, negative) pairs of the same group only (one problem's solutions): how
    often the critic ranks a right solution above a wrong one *of the same problem*, which is what a
    search's read-out asks of it. The pooled ``auc`` also rewards a critic for telling easy problems
    from hard ones. NaN when no group holds both classes."""
    by_group: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        by_group.setdefault(group, []).append(i)
    s, y = np.asarray(scores, np.float64), np.asarray(labels, np.float64) >= 0.5
    ordered = pairs = 0.0
    for members in by_group.values():
        positives, negatives = int(y[members].sum()), len(members) - int(y[members].sum())
        if positives and negatives:
            ordered += auc(s[members].tolist(), y[members].tolist()) * positives * negatives
            pairs += positives * negatives
    return float(ordered / pairs) if pairs else float("nan")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation; NaN when either side is constant."""
    rx, ry = _ranks(np.asarray(x, np.float64)), _ranks(np.asarray(y, np.float64))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def spearman_ceiling(targets: Sequence[float]) -> float:
    """The highest Spearman correlation with ``targets`` that scores without ties can reach.

    Tied targets (most success rates of a weak policy are exactly 0) share one rank, which no
    continuous critic reproduces: the best it can do is order the tie groups right, and then the
    correlation is sd(target ranks) / sd(1..n) whatever order it puts each group in. NaN when the
    targets are constant."""
    ranks = _ranks(np.asarray(targets, np.float64))
    n = len(ranks)
    if n < 2 or ranks.std() == 0:
        return float("nan")
    return float(ranks.std() / np.sqrt((n * n - 1) / 12))


def brier(scores: Sequence[float], targets: Sequence[float]) -> float:
    return float(np.mean((np.asarray(scores) - np.asarray(targets)) ** 2))


def expected_calibration_error(scores: Sequence[float], targets: Sequence[float], bins: int = 10) -> float:
    """Mean |predicted - observed| over equal-width score bins, weighted by bin size."""
    s, t = np.asarray(scores, np.float64), np.asarray(targets, np.float64)
    index = np.minimum((s * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            error += mask.sum() * abs(s[mask].mean() - t[mask].mean())
    return float(error / max(1, len(s)))
