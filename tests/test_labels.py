from __future__ import annotations

from typing import Any

import pytest

from alphallm.train.labels import orm_rows, prm_rows, sibling_pairs, success_counts, value_rows


def _node(i: int, parent: int, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": i,
        "parent": parent,
        "text": text,
        "terminal": False,
        "verified": None,
        "pruned": False,
        "rollouts": [],
        "children": [],
        **extra,
    }


def _tree() -> dict[str, Any]:
    """Q: 2+3*4
    [1] 3*4=12 -> 2+12        (rollouts: ✓ ✓)
        [3] 2+12=14 -> 14     (rollouts: ✓)
            [5] Answer: 14 ✓
    [2] 3*4=13 -> 2+13        (rollouts: ✗ ✗)   <- first error
        [4] 2+13=15 -> 15
            [6] Answer: 15 ✗
    [7] 2+3=5 -> 5*4          pruned by the tool verifier
    """
    ok = {"text": "...", "score": 1.0, "verified": True}
    bad = {"text": "...", "score": 0.0, "verified": False}
    nodes = [
        _node(0, -1, "", children=[1, 2, 7]),
        _node(1, 0, "3*4=12 -> 2+12\n", rollouts=[ok, ok], children=[3]),
        _node(2, 0, "3*4=13 -> 2+13\n", rollouts=[bad, bad], children=[4]),
        _node(3, 1, "2+12=14 -> 14\n", rollouts=[ok], children=[5]),
        _node(4, 2, "2+13=15 -> 15\n", children=[6]),
        _node(5, 3, "Answer: 14\n", terminal=True, verified=True),
        _node(6, 4, "Answer: 15\n", terminal=True, verified=False),
        _node(7, 0, "2+3=5 -> 5*4\n", pruned=True),
    ]
    return {"problem_id": "p", "root": "Q: 2+3*4\n", "nodes": nodes}


def test_success_counts_come_from_verified_outcomes_only() -> None:
    counts = success_counts(_tree())
    assert counts[5] == (1, 1) and counts[3] == (2, 2) and counts[1] == (4, 4)
    assert counts[2] == (0, 3) and counts[4] == (0, 1)
    assert counts[7] == (0, 1)
    assert counts[0] == (4, 8)


def test_value_rows() -> None:
    rows = {row.solution: row for row in value_rows([_tree()], min_samples=2)}
    assert rows[""].target == pytest.approx(0.5) and rows[""].weight == 8
    assert rows["3*4=12 -> 2+12\n"].target == 1.0
    assert rows["3*4=13 -> 2+13\n"].target == 0.0
    assert "3*4=13 -> 2+13\n2+13=15 -> 15\n" not in rows  # one outcome: below min_samples
    assert all(row.group == "p" for row in rows.values())


def test_prm_rows_label_the_first_error_and_nothing_below_it() -> None:
    labels = {row.solution.splitlines()[-1]: row.target for row in prm_rows([_tree()])}
    assert labels["3*4=12 -> 2+12"] == 1.0
    assert labels["2+12=14 -> 14"] == 1.0
    assert labels["Answer: 14"] == 1.0
    assert labels["3*4=13 -> 2+13"] == 0.0  # the first error
    assert labels["2+3=5 -> 5*4"] == 0.0  # pruned by the tool verifier
    assert "2+13=15 -> 15" not in labels and "Answer: 15" not in labels  # below the first error


def test_orm_rows_and_sibling_pairs() -> None:
    rows = orm_rows([_tree()])
    outcomes = sorted(row.target for row in rows)
    # 2 terminals + 5 rollouts, but equal rollouts from one node are kept once: 3 right, 2 wrong.
    assert outcomes == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert {row.solution for row in rows} >= {"3*4=12 -> 2+12\n2+12=14 -> 14\nAnswer: 14\n"}
    pairs = sibling_pairs([_tree()], min_samples=1)
    assert len(pairs) == 1
    assert pairs[0].better == "3*4=12 -> 2+12\n" and pairs[0].gap == 1.0


def test_identical_siblings_make_no_pair() -> None:
    tree = _tree()
    tree["nodes"][2]["text"] = tree["nodes"][1]["text"]  # a re-sampled duplicate whose rollouts failed
    (pair,) = sibling_pairs([tree], min_samples=1)
    assert (pair.better, pair.worse) == ("3*4=12 -> 2+12\n", "2+3=5 -> 5*4\n")  # the pruned step instead
    tree["nodes"][0]["children"] = [1, 2]
    assert sibling_pairs([tree], min_samples=1) == []
