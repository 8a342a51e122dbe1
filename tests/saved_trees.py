"""Hand-made saved trees (the JSON of ``--save-trees``) that the viewer and report tests share."""

from __future__ import annotations

from typing import Any

EVIL = "</script><b>bold</b>\n"


def _node(node_id: int, parent: int, text: str, visits: int, q: float, **extra: Any) -> dict[str, Any]:
    node = {
        "id": node_id,
        "parent": parent,
        "depth": 0 if parent < 0 else 1,
        "text": text,
        "tokens": len(text),
        "logprob": -0.5 * node_id,
        "visits": visits,
        "q": q,
        "value": None if parent < 0 else q,
        "terminal": False,
        "verified": None,
        "width": 2,
        "children": [],
        "critics": {},
        "rollouts": [],
        "merged": [],
    }
    return node | extra


def small_tree(problem_id: str = "arith-test-0") -> dict[str, Any]:
    """Root with two children; the most-visited path is 0 -> 2 -> 4 (a verified-right terminal)."""
    nodes = [
        _node(0, -1, "", 10, 0.6, children=[1, 2]),
        _node(1, 0, "7*6=42 -> 38+42-19\n", 3, 0.3, children=[3]),
        _node(
            2,
            0,
            EVIL,
            6,
            0.8,
            children=[4, 5],
            critics={"tool": 1.0, "rollout": 0.5},
            rollouts=[{"text": "= 61\n", "score": 1.0, "verified": True}],
            merged=["7 * 6 = 42\n"],
        ),
        _node(3, 1, "= 60\n", 1, 0.0, terminal=True, verified=False),
        _node(4, 2, "= 61\n", 4, 1.0, terminal=True, verified=True),
        _node(5, 2, "38+42=80\n", 1, 0.4),
    ]
    return {"problem_id": problem_id, "root": "Q: 38+7*6-19\n", "nodes": nodes}
