"""One line on what a loop stage did, from the record it wrote: what a person watching a long run wants
to see as each stage ends (how many problems were solved, how much data came of it, what the gate
kept), without opening the round's JSON files. Every field is read with ``.get``: a record written by
older code, or a stage that was skipped, gives a shorter line, never an error."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["stage_line"]

Record = Mapping[str, Any]


def stage_line(stage: str, record: Record) -> str:
    """``stage``'s outcome in a few words (``round 1: search`` is said before it starts); "" if none."""
    describe = _LINES.get(stage)
    return describe(record) if describe is not None else ""


def _imagine(record: Record) -> str:
    sources = []
    if record.get("generated"):
        sources.append(f"{record['generated']} from the task's generator")
    if record.get("from_file"):
        sources.append(f"{record['from_file']} from the problems file")
    imagined = record.get("imagined") or {}
    if imagined.get("sampled"):
        kept = f"{imagined.get('kept', 0)} of {imagined['sampled']} imagined kept"
        dropped = (record.get("answers") or {}).get("dropped")
        sources.append(kept + (f" ({dropped} then dropped: no agreed answer)" if dropped else ""))
    problems = f"{record.get('problems', 0)} problems"
    return f"{problems}: {', '.join(sources)}" if sources else problems


def _search(record: Record) -> str:
    line = _accuracy(record.get("accuracy"), record.get("problems"))
    tokens = record.get("generated_tokens")
    return line + (f", {tokens:,} tokens generated" if tokens is not None else "")


def _data(record: Record) -> str:
    sft, pairs = len(record.get("sft") or []), len(record.get("pairs") or [])
    solved, problems = record.get("solved", 0), record.get("problems", 0)
    return f"{sft} SFT rows and {pairs} DPO pairs from {solved} of {problems} problems solved"


def _sft(record: Record) -> str:
    if not record.get("rows"):
        return "no rows: the policy stays as it was"
    return f"{record['rows']} rows, {record.get('steps', 0)} steps"


def _dpo(record: Record) -> str:
    if record.get("skipped") or not record.get("pairs"):
        return f"{record.get('pairs', 0)} pairs: skipped"
    final = record.get("final") or {}
    margin = f", final reward margin {final['margin']:.3f}" if "margin" in final else ""
    return f"{record['pairs']} pairs, {record.get('steps', 0)} steps{margin}"


def _critics(record: Record) -> str:
    trained = list(record.get("trained") or [])
    skipped = [
        f"{kind} skipped ({value['skipped']})"
        for kind, value in record.items()
        if isinstance(value, Mapping) and "skipped" in value
    ]
    kept = sorted(record.get("kept") or {})
    parts = [f"trained {', '.join(trained)}" if trained else "none trained", *skipped]
    if kept:
        parts.append(f"in use: {', '.join(kept)}")
    return "; ".join(parts)


def _gate(record: Record) -> str:
    metric = record.get("metric", "dev")
    now, before = record.get("dev_accuracy"), record.get("previous_dev_accuracy")
    scores = ""
    if now is not None:
        scores = f" ({metric} dev accuracy {now:.3f}" + (
            f", {before:.3f} before)" if before is not None else ")"
        )
    if record.get("nothing_trained"):
        return "nothing trained: the policy before stays"
    if record.get("accepted", True):
        return f"kept {record.get('kept', '?')}{scores}"
    # Not accepted: "kept" names the best candidate, and the policy before the round goes on.
    line = f"none kept, the policy before stays: {record.get('kept', '?')}{scores}"
    guard = (record.get("search_guard") or {}).get("candidates") or {}
    first: Record = next(iter(guard.values()), {})
    if "accuracy" in first and "accuracy" in first.get("reference", {}):
        line += f", dev search {first['accuracy']:.3f} against {first['reference']['accuracy']:.3f}"
    return line


def _evaluate(record: Record) -> str:
    scores = [
        f"{name} {value['accuracy']:.3f}"
        for name, value in record.items()
        if isinstance(value, Mapping) and isinstance(value.get("accuracy"), (int, float))
    ]
    line = ", ".join(scores)
    repeated: Record = record.get("repeated") or {}
    if repeated.get("methods"):  # the same policy as the round before: its outcomes, not decoded again
        line += f" ({', '.join(repeated['methods'])} taken from round {repeated['round']}: the same policy)"
    return line


def _accuracy(accuracy: Any, problems: Any) -> str:
    if not isinstance(accuracy, (int, float)) or not problems:
        return f"{problems or 0} problems"
    return f"solved {round(accuracy * problems)} of {problems} problems ({accuracy:.3f})"


_LINES: dict[str, Callable[[Record], str]] = {
    "imagine": _imagine,
    "search": _search,
    "data": _data,
    "sft": _sft,
    "dpo": _dpo,
    "critics": _critics,
    "gate": _gate,
    "evaluate": _evaluate,
}
