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

__all__ = ["check_same_task", "compare", "load_outcomes", "recorded_task", "round_by_round"]


def load_outcomes(path: str | Path) -> dict[str, dict[str, float]]:
    """``{label: {problem id: score}}`` from a search or eval result file, or a loop run directory
    (labels ``round <k> <method>``)."""
    path = Path(path)
    if path.is_dir():
        return _run_outcomes(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file or run directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM, as other inputs take one
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not a JSON result file ({error})") from None
    if isinstance(data, dict) and isinstance(data.get("results"), list):  # alphallm search --out
        return {str(data.get("method", "search")): _scores(path, data["results"])}
    if isinstance(data, dict) and isinstance(data.get("records"), list):  # alphallm eval --out
        return {str(data.get("method", "eval")): _scores(path, data["records"])}
    raise UserError(f"{path}: no per-problem outcomes (expected the output of search or eval --out)")


def recorded_task(path: str | Path) -> str | None:
    """The task a result file (its ``task``) or a loop run (its ``config.yaml``) was measured on; None
    where it is not recorded."""
    import yaml

    path = Path(path)
    try:
        if path.is_dir():
            data = yaml.safe_load((path / "config.yaml").read_text())
        else:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError, yaml.YAMLError):  # UnicodeDecodeError is a ValueError
        return None
    task = data.get("task") if isinstance(data, dict) else None
    return task if isinstance(task, str) else None


def check_same_task(a: str | Path, b: str | Path) -> None:
    """Refuses results of two tasks: their problem ids can collide (a problems file's rows are
    numbered per file), and colliding ids would pair unrelated problems."""
    task_a, task_b = recorded_task(a), recorded_task(b)
    if task_a is not None and task_b is not None and task_a != task_b:
        raise UserError(f"A ({a}) is {task_a}, B ({b}) is {task_b}: problems of different tasks do not pair")


def compare(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per label both inputs have (else per pair of one method, a result's ``greedy`` with a
    run's ``round <k> greedy``; else, when each has a single label, those two): their accuracies on the
    shared problems and B's paired change over A."""
    pairs = [(label, label) for label in a if label in b]
    if not pairs:  # a result against a run: its method against the run's rounds of that method
        pairs = [(x, y) for x in a for y in b if _method(x) == _method(y)]
    if not pairs and len(a) == len(b) == 1:
        pairs = [(next(iter(a)), next(iter(b)))]
    if not pairs:
        raise UserError(f"nothing to compare: A has {sorted(a)}, B has {sorted(b)}")
    rows = [_row(x if x == y else f"{x} / {y}", a[x], b[y]) for x, y in pairs]
    return _found(rows, "the inputs share no problem")


def _method(label: str) -> str:
    """A label's method: a run's ``round 2 mcts`` is ``mcts``, as a search or eval result names it."""
    words = label.split(" ", 2)
    return words[2] if len(words) == 3 and words[0] == "round" and words[1].isdigit() else label


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
        # bool("false") is True: a string would count as solved
        if record["correct"] is not None and not isinstance(record["correct"], bool):
            raise UserError(
                f"{path}: record {i}: correct must be true, false or null, not {record['correct']!r}"
            )
    return share_by_problem((str(r["problem_id"]), r["correct"]) for r in records)


def _metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    if not lines:
        raise UserError(f"{run}: not a loop run with finished rounds (no metrics.jsonl)")
    return [
        _with_readouts(_round_record(path, lineno, line))
        for lineno, line in enumerate(lines, 1)
        if line.strip()
    ]


def _round_record(path: Path, lineno: int, line: str) -> dict[str, Any]:
    """One line of ``metrics.jsonl``: a round's record, with its methods' outcomes checked."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{lineno}: not a JSON line ({error.msg})") from None
    round_ = record.get("round") if isinstance(record, dict) else None
    if not isinstance(round_, int) or isinstance(round_, bool):
        raise UserError(f"{path}:{lineno}: not a round's record (a JSON object with an integer 'round')")
    for method, value in record.items():
        if isinstance(value, dict):
            _check_outcomes(f"{path}:{lineno}: {method}", value)
    return record


def _check_outcomes(where: str, record: dict[str, Any]) -> None:
    """A method's ``solved`` (problem id -> score in [0, 1]) and its ``other_readouts``' ones."""
    solved = record.get("solved")
    if solved is not None and not (
        isinstance(solved, dict) and all(isinstance(v, int | float) and 0 <= v <= 1 for v in solved.values())
    ):
        raise UserError(f"{where}.solved is not a mapping of problem ids to scores in [0, 1]")
    readouts = record.get("other_readouts", {})
    if not isinstance(readouts, dict):
        raise UserError(f"{where}.other_readouts is not a mapping")
    for name, readout in readouts.items():
        if not isinstance(readout, dict):
            raise UserError(f"{where}.other_readouts.{name} is not a mapping")
        _check_outcomes(f"{where}.other_readouts.{name}", readout)


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
