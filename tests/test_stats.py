"""Changes between rounds, paired over the same test problems, and when they are beyond noise."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from alphallm.io import write_json
from alphallm.report.stats import binomial_se, noise_drops, paired_change, round_changes


def test_a_paired_change_is_measured_on_the_problems_both_rounds_saw() -> None:
    before = {"a": 0, "b": 0, "c": 1, "d": 1, "gone": 1}
    after = {"a": 1, "b": 1, "c": 1, "d": 1, "new": 0}
    change = paired_change(before, after)
    # differences 1, 1, 0, 0: mean 0.5, sample sd sqrt(1/3), se sqrt(1/3) / 2
    assert change["problems"] == 4 and change["before"] == 0.5 and change["after"] == 1.0
    assert change["change"] == pytest.approx(0.5)
    assert change["se"] == pytest.approx(math.sqrt(1 / 3) / 2)
    assert change["z"] == pytest.approx(0.5 / (math.sqrt(1 / 3) / 2))
    # The same accuracies on unrelated problems are not a change at all: nothing to pair.
    with pytest.raises(ValueError, match="no problem"):
        paired_change({"a": 1}, {"b": 1})


def test_pairing_sees_a_small_change_that_two_binomial_errors_would_call_noise() -> None:
    """100 problems: 60 solved before; after, the same 60 and 5 more. Independent binomial errors
    (about 0.048 each) would hide +0.05; paired, only the 5 problems that changed vary."""
    before = {f"p{i}": int(i < 60) for i in range(100)}
    after = {f"p{i}": int(i < 65) for i in range(100)}
    change = paired_change(before, after)
    assert change["change"] == pytest.approx(0.05)
    assert change["z"] > 2 > 0.05 / math.hypot(binomial_se(0.6, 100), binomial_se(0.65, 100))


def test_round_changes_flag_only_drops_beyond_noise() -> None:
    def record(k: int, solved: list[int]) -> dict:
        ids = {f"p{i}": s for i, s in enumerate(solved)}
        return {"round": k, "greedy": {"accuracy": sum(solved) / len(solved), "solved": ids}}

    metrics = [
        record(0, [1] * 20 + [0] * 20),
        record(1, [1] * 19 + [0] * 21),  # one problem lost: noise
        record(2, [0] * 40),  # every solved one lost
        {"round": 3, "greedy": {"accuracy": 0.5}},  # an older record without outcomes: not compared
    ]
    changes = round_changes(metrics, "greedy")
    assert set(changes) == {1, 2}
    assert changes[1]["change"] == pytest.approx(-0.025) and changes[1]["z"] > -2
    assert noise_drops(metrics, "greedy") == [2]
    assert round_changes(metrics, "mcts") == {}


def test_a_change_without_variance_is_written_as_strict_json(tmp_path: Path) -> None:
    """Every shared problem lost: the se is 0 and z is -inf. Python would write ``-Infinity``, which
    strict JSON readers (jq, JavaScript, most libraries outside Python) reject; it is written as null."""
    change = paired_change({"a": 1, "b": 1}, {"a": 0, "b": 0})
    assert change["se"] == 0 and change["z"] == -math.inf
    write_json(tmp_path / "change.json", {"changes": [change], "nan": math.nan})
    text = (tmp_path / "change.json").read_text()

    def reject(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    written = json.loads(text, parse_constant=reject)
    assert written["changes"][0]["z"] is None and written["nan"] is None
    assert written["changes"][0]["change"] == -1.0


def test_the_report_shows_each_rounds_change_and_marks_it_beyond_noise() -> None:
    from alphallm.report.run_report import _table

    def cell(solved: list[int]) -> dict:
        return {
            "accuracy": sum(solved) / len(solved),
            "tokens_per_problem": 80.0,
            "solved": {f"p{i}": s for i, s in enumerate(solved)},
        }

    metrics = [
        {"round": 0, "greedy": cell([0] * 40)},
        {"round": 1, "accepted": True, "greedy": cell([1] * 40)},
    ]
    html = _table(metrics)
    assert "<b>+1.000 (z +inf)</b>" in html  # every problem changed alike: no noise at all, in bold
    quiet = [metrics[0], {"round": 1, "accepted": True, "greedy": cell([1] + [0] * 39)}]
    assert "+0.025 (z +1.0)" in _table(quiet) and "<b>" not in _table(quiet)


def test_improve_prints_how_far_a_change_is_from_noise() -> None:
    from alphallm.commands.improve_cmd import _noise

    before = {"accuracy": 0.5, "solved": {"a": 0, "b": 1, "c": 0, "d": 1}}
    after = {"accuracy": 0.75, "solved": {"a": 1, "b": 1, "c": 0, "d": 1}}
    assert _noise(before, after) == " (z +1.0)"  # one problem of four: differences 1, 0, 0, 0
    assert _noise(None, after) == ""  # a method the starting policy was not measured with
    assert _noise({"accuracy": 0.5}, after) == ""  # a record from before outcomes were kept


def test_round_changes_skip_a_method_record_that_is_not_a_mapping() -> None:
    metrics = [
        {"round": 0, "greedy": {"solved": {"a": 1, "b": 0}}},
        {"round": 1, "greedy": 0.5},
        {"round": 2, "greedy": {"solved": {"a": 1, "b": 1}}},
    ]
    assert round_changes(metrics, "greedy") == {}
