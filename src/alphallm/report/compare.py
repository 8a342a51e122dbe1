"""Per-problem outcomes of finished work, read back for paired comparisons (``alphallm compare``).

Three kinds of input hold them: a search result (``alphallm search --out``: one answer per problem),
an evaluation (``alphallm eval --out``: ``n`` decoded solutions per problem, scored by the fraction
correct) and a loop run directory (every round's test evaluation, per method). Each reads as
``{label: {problem id: score}}``; two inputs compare label by label, over the problems both measured.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alphallm.errors import UserError
from alphallm.report.stats import paired_change, round_changes, share_by_problem

__all__ = ["compare", "load_outcomes", "round_by_round"]


def load_outcomes(path: str | Path) -> dict[str, dict[str, float]]:
    """``{label: {problem id: score}}`` from a search or eval result file, or a loop run directory
    (labels ``round <k> <method>``)."""
    path = Path(path)
    if path.is_dir():
        return _run_outcomes(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file or run directory")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not a JSON result file ({error})") from None
    if isinstance(data, dict) and isinstance(data.get("results"), list):  # alphallm search --out
        return {str(data.get("method", "search")): _scores(path, data["results"])}
    if isinstance(data, dict) and isinstance(data.get("records"), list):  # alphallm eval --out
        return {str(data.get("method", "eval")): _scores(path, data["records"])}
    raise UserError(f"{path}: no per-problem outcomes (expected the output of search or eval --out)")


def compare(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per label both inputs have (or, when each has a single label, those two): their
    accuracies on the shared problems and B's paired change over A."""
    pairs = [(label, label) for label in a if label in b]
    if not pairs and len(a) == len(b) == 1:
        pairs = [(next(iter(a)), next(iter(b)))]
    if not pairs:
        raise UserError(f"nothing to compare: A has {sorted(a)}, B has {sorted(b)}")
    rows = [_row(x if x == y else f"{x} / {y}", a[x], b[y]) for x, y in pairs]
    return _found(rows, "the inputs share no problem")


def round_by_round(run: str | Path) -> list[dict[str, Any]]:
    """A loop run's rounds, each (after) against the round before (before), method by method."""
    metrics = _metrics(Path(run))
    methods = dict.fromkeys(m for record in metrics for m, v in record.items() if isinstance(v, dict))
    rows = [
        {"label": f"round {k} {method}", **change}
        for method in methods
        for k, change in round_changes(metrics, method).items()
    ]
    return _found(rows, "the run has no two consecutive rounds with per-problem outcomes")


def _row(label: str, a: dict[str, float], b: dict[str, float]) -> dict[str, Any] | None:
    """B's paired change over A on the problems both measured (None: none shared, e.g. a test size
    changed between them)."""
    try:
        return {"label": label, **paired_change(a, b)}
    except ValueError:
        return None


def _found(rows: Sequence[dict[str, Any] | None], otherwise: str) -> list[dict[str, Any]]:
    kept = [row for row in rows if row is not None]
    if not kept:
        raise UserError(f"nothing to compare: {otherwise}")
    return kept


def _scores(path: Path, records: list[Any]) -> dict[str, float]:
    """Mean correctness per problem id (one record each for a search, ``n`` for a sampled eval)."""
    for i, record in enumerate(records):
        if not isinstance(record, dict) or "problem_id" not in record or "correct" not in record:
            raise UserError(f"{path}: record {i} has no problem_id and correct")
    return share_by_problem((str(r["problem_id"]), r["correct"]) for r in records)


def _metrics(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").is_file() else []
    if not lines:
        raise UserError(f"{run}: not a loop run with finished rounds (no metrics.jsonl)")
    return [_with_readouts(json.loads(line)) for line in lines if line.strip()]


def _with_readouts(record: dict[str, Any]) -> dict[str, Any]:
    """A round's record with each method's other read-outs of the same trees (the learned-critics
    search's vote, say) as methods of their own: ``mcts_critics vote``."""
    return record | {
        f"{method} {readout}": outcome
        for method, value in record.items()
        if isinstance(value, dict)
        for readout, outcome in value.get("other_readouts", {}).items()
    }


def _run_outcomes(run: Path) -> dict[str, dict[str, float]]:
    out = {
        f"round {record['round']} {method}": {k: float(v) for k, v in value["solved"].items()}
        for record in _metrics(run)
        for method, value in record.items()
        if isinstance(value, dict) and value.get("solved")
    }
    if not out:
        raise UserError(f"{run}: its records keep no per-problem outcomes (a run from before they were kept)")
    return out
