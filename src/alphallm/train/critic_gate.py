"""The critic gate: does a critic retrained on more labels replace the one in use?

Both score problems neither trained on, by the bars' measures; the one in use stays only if it is
better by more than twice the bootstrap standard error of the difference (a gate on noise decides on
noise; benchmarks/critic_gate.py measures what it keeps)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alphallm.critics.learned import CriticModel
from alphallm.critics.metrics import auc, spearman
from alphallm.train.critic import (
    CriticTrainConfig,
    cap_by_group,
    critic_metrics,
    split_by_group,
    trained_groups,
)
from alphallm.train.critic_data import predict
from alphallm.train.labels import LabelRow

__all__ = ["GATE_MEASURES", "critic_gate", "gate_retrained"]

# What the critic gate compares: the bars' measures (AUC of outcome and first-error labels, rank
# correlation of success rates).
GATE_MEASURES = {"value": "spearman", "prm": "auc", "orm": "auc"}
GATE_MIN_ROWS = 30


def critic_gate(
    kind: str,
    rows: Sequence[LabelRow],
    new: Callable[[Sequence[LabelRow]], list[float]],
    previous: Callable[[Sequence[LabelRow]], list[float]],
    *,
    tolerance: float = 0.0,
    draws: int = 200,
) -> dict[str, Any]:
    """Whether a retrained critic replaces the one before it: both score ``rows`` (problems neither
    trained on), and the previous one stays only if it is better (``GATE_MEASURES``) by more than twice
    the standard error of the difference, from ``draws`` bootstrap resamples of the problems (or by more
    than ``tolerance``, if larger): a gate on a difference within noise decides on noise. Too few rows,
    or labels of one class, keep the new one: it has seen more."""
    measure = GATE_MEASURES[kind]
    record: dict[str, Any] = {"measure": measure, "rows": len(rows), "problems": len({r.group for r in rows})}
    if len(rows) < GATE_MIN_ROWS:
        return {**record, "accepted": True, "reason": f"fewer than {GATE_MIN_ROWS} rows"}
    scores = {"new": new(rows), "previous": previous(rows)}
    for name, values in scores.items():
        record[name] = critic_metrics(kind, values, rows, critic=f"the {name} {kind} critic")[measure]
    if math.isnan(record["new"]) or math.isnan(record["previous"]):
        return {**record, "accepted": True, "reason": f"{measure} undefined on these rows"}
    record["se"] = _bootstrap_se(measure, rows, scores["new"], scores["previous"], draws)
    margin = max(tolerance, 2 * record["se"])
    return {**record, "accepted": record["new"] >= record["previous"] - margin}


def gate_retrained(
    kind: str,
    rows: Sequence[LabelRow],
    config: CriticTrainConfig,
    new: tuple[CriticModel, Any],
    previous_dir: str | Path,
    previous_rows: Sequence[LabelRow],
    previous_config: CriticTrainConfig,
    *,
    tolerance: float = 0.0,
    dtype: str = "float32",
) -> dict[str, Any]:
    """``critic_gate`` of a critic just trained on ``rows`` with ``config`` against the saved one at
    ``previous_dir`` (trained on ``previous_rows`` with ``previous_config``; read in ``dtype``, the new
    one's), on the new one's held-out problems that the previous one did not train on either (a problem
    can recur across rounds)."""
    seen = trained_groups(previous_rows, previous_config)
    unseen = [r for r in split_by_group(rows, config.holdout, config.seed)[1] if r.group not in seen]
    held = cap_by_group(unseen, config.max_held_out_rows, config.seed)
    old, old_tokenizer, _ = CriticModel.load(previous_dir, dtype=dtype)
    return critic_gate(
        kind,
        held,
        lambda r: predict(*new, r),
        lambda r: predict(old, old_tokenizer, r),
        tolerance=tolerance,
    )


def _bootstrap_se(
    measure: str, rows: Sequence[LabelRow], new: Sequence[float], previous: Sequence[float], draws: int
) -> float:
    """Standard error of measure(new) - measure(previous) over resamples of whole problems (seeded)."""
    by_group: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_group.setdefault(row.group, []).append(i)
    groups = [np.asarray(ix) for ix in by_group.values()]
    targets, a, b = (np.asarray(v, np.float64) for v in ([r.target for r in rows], new, previous))
    score = auc if measure == "auc" else spearman
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(draws):
        ix = np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))])
        diffs.append(score(a[ix], targets[ix]) - score(b[ix], targets[ix]))
    return float(np.nanstd(diffs))
