"""Search trees for B problems as preallocated arrays (mctx-style), options in a side table.

Node ids are per tree; the root is node 0 and node ``i`` is the ``i``-th node created. Shapes:
B trees, N node slots per tree, K child slots per node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from alphallm.search.types import EvalRequest, Evaluation, Option, Rollout

__all__ = ["NO_PARENT", "ROOT", "Tree"]

ROOT = 0
NO_PARENT = -1
UNKNOWN = -1  # verified: -1 unknown, 0 wrong, 1 right


@dataclass
class Tree:
    """B search trees.

    Attributes (arrays):
        parent: int32 [B, N], the parent's id (NO_PARENT for the root and unused slots).
        depth: int16 [B, N], options from the root.
        visits: int32 [B, N], backed-up evaluations through the node.
        value_sum: float64 [B, N], sum of those evaluations; Q = value_sum / visits.
        raw_value: float64 [B, N], the node's own evaluation (NaN until evaluated; the root has none).
        logprob: float64 [B, N], log pi of the option that leads to the node.
        terminal: bool [B, N], the node ends a solution.
        pruned: bool [B, N], a hard verifier rejected the node's step: a dead end.
        verified: int8 [B, N], verifier outcome of a terminal (-1 unknown, 0 wrong, 1 right).
        rollout_wins: float64 [B, N], verified-correct fast rollouts started at the node.
        rollout_count: int32 [B, N], verified fast rollouts started at the node.
        width: int16 [B, N], children the node may have now (n(s), only grows).
        closed: bool [B, N], the node gets no more children (``drop_twins``: its policy repeats itself).
        num_children: int16 [B, N]; children: int32 [B, N, K], child ids (-1 empty).
        num_nodes: int32 [B], nodes in use.
        simulations: int32 [B], simulations spent (new nodes, merges and terminal revisits).
    Side tables: ``roots[b]`` (prompt text), ``options[b][i]`` (Option of node i, None for the
    root), ``evaluations[b][i]`` (the Evaluation of node i), ``merged[b][i]`` (options merged into i).
    """

    parent: np.ndarray
    depth: np.ndarray
    visits: np.ndarray
    value_sum: np.ndarray
    raw_value: np.ndarray
    logprob: np.ndarray
    terminal: np.ndarray
    pruned: np.ndarray
    verified: np.ndarray
    rollout_wins: np.ndarray
    rollout_count: np.ndarray
    width: np.ndarray
    closed: np.ndarray
    num_children: np.ndarray
    children: np.ndarray
    num_nodes: np.ndarray
    simulations: np.ndarray
    roots: list[str]
    options: list[list[Option | None]]
    evaluations: list[list[Evaluation | None]]
    merged: list[list[list[str]]]

    @classmethod
    def create(cls, roots: list[str], *, max_nodes: int, max_children: int) -> Tree:
        batch, n, k = len(roots), max_nodes, max_children
        tree = cls(
            parent=np.full((batch, n), NO_PARENT, np.int32),
            depth=np.zeros((batch, n), np.int16),
            visits=np.zeros((batch, n), np.int32),
            value_sum=np.zeros((batch, n), np.float64),
            raw_value=np.full((batch, n), np.nan, np.float64),
            logprob=np.zeros((batch, n), np.float64),
            terminal=np.zeros((batch, n), bool),
            pruned=np.zeros((batch, n), bool),
            verified=np.full((batch, n), UNKNOWN, np.int8),
            rollout_wins=np.zeros((batch, n), np.float64),
            rollout_count=np.zeros((batch, n), np.int32),
            width=np.zeros((batch, n), np.int16),
            closed=np.zeros((batch, n), bool),
            num_children=np.zeros((batch, n), np.int16),
            children=np.full((batch, n, k), -1, np.int32),
            num_nodes=np.ones(batch, np.int32),
            simulations=np.zeros(batch, np.int32),
            roots=list(roots),
            options=[[None] for _ in roots],
            evaluations=[[None] for _ in roots],
            merged=[[[]] for _ in roots],
        )
        return tree

    # -- construction ---------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return len(self.roots)

    @property
    def capacity(self) -> int:
        return self.parent.shape[1]

    def add_child(self, b: int, parent: int, option: Option) -> int:
        """Adds a node under ``parent``; returns its id."""
        node = int(self.num_nodes[b])
        if node >= self.capacity:
            raise RuntimeError("tree is full: raise max_nodes")
        slot = int(self.num_children[b, parent])
        self.children[b, parent, slot] = node
        self.num_children[b, parent] += 1
        self.parent[b, node] = parent
        self.depth[b, node] = self.depth[b, parent] + 1
        self.logprob[b, node] = option.logprob
        self.terminal[b, node] = option.terminal
        self.num_nodes[b] += 1
        self.options[b].append(option)
        self.evaluations[b].append(None)
        self.merged[b].append([])
        return node

    def set_evaluation(self, b: int, node: int, evaluation: Evaluation) -> None:
        self.raw_value[b, node] = evaluation.value
        self.pruned[b, node] = evaluation.prune
        self.evaluations[b][node] = evaluation
        if evaluation.verified is not None:
            self.verified[b, node] = int(evaluation.verified)
        scored = [r for r in evaluation.rollouts if r.verified is not None]
        self.rollout_count[b, node] += len(scored)
        self.rollout_wins[b, node] += sum(bool(r.verified) for r in scored)

    def backup(self, b: int, node: int, value: float) -> None:
        """Adds ``value`` to the node and every ancestor (mean backup, no discount)."""
        while node != NO_PARENT:
            self.visits[b, node] += 1
            self.value_sum[b, node] += value
            node = int(self.parent[b, node])

    # -- reading --------------------------------------------------------------------------------
    def child_ids(self, b: int, node: int) -> np.ndarray:
        return self.children[b, node, : self.num_children[b, node]]

    def q(self, b: int, node: int) -> float:
        visits = self.visits[b, node]
        return float(self.value_sum[b, node] / visits) if visits else 0.0

    def path(self, b: int, node: int) -> list[int]:
        """Node ids from the root to ``node``."""
        out = [node]
        while self.parent[b, out[-1]] != NO_PARENT:
            out.append(int(self.parent[b, out[-1]]))
        return out[::-1]

    def option_text(self, b: int, node: int) -> str:
        """The text of the option that leads to ``node`` ("" for the root)."""
        option = self.options[b][node]
        return option.text if option is not None else ""

    def solution(self, b: int, node: int) -> str:
        """The options on the path to ``node``, joined (the text after the prompt)."""
        return "".join(self.option_text(b, i) for i in self.path(b, node)[1:])

    def state(self, b: int, node: int) -> str:
        return self.roots[b] + self.solution(b, node)

    def eval_request(self, b: int, node: int) -> EvalRequest:
        """What a critic needs to value the (non-root) ``node``: its parent's state and its option."""
        return EvalRequest(
            tree=b,
            node=node,
            parent_state=self.state(b, int(self.parent[b, node])),
            option=self.options[b][node],  # type: ignore[arg-type]
            depth=int(self.depth[b, node]),
        )

    def terminals(self, b: int) -> np.ndarray:
        return np.flatnonzero(self.terminal[b, : self.num_nodes[b]])

    def live_children(self, b: int, node: int) -> int:
        """Children that are not dead ends (they count toward the node's width)."""
        kids = self.child_ids(b, node)
        return int(kids.size - self.pruned[b, kids].sum())

    # -- export ---------------------------------------------------------------------------------
    def to_dict(self, b: int) -> dict[str, Any]:
        """One tree as plain JSON-able data (the tree viewer and the critics' label builders read it)."""
        nodes = []
        for i in range(int(self.num_nodes[b])):
            option = self.options[b][i]
            evaluation = self.evaluations[b][i]
            nodes.append(
                {
                    "id": i,
                    "parent": int(self.parent[b, i]),
                    "depth": int(self.depth[b, i]),
                    "text": option.text if option else "",
                    "tokens": option.num_tokens if option else 0,
                    "logprob": float(self.logprob[b, i]),
                    "visits": int(self.visits[b, i]),
                    "q": round(self.q(b, i), 6),
                    "value": None
                    if np.isnan(self.raw_value[b, i])
                    else round(float(self.raw_value[b, i]), 6),
                    "terminal": bool(self.terminal[b, i]),
                    "pruned": bool(self.pruned[b, i]),
                    "verified": None if self.verified[b, i] == UNKNOWN else bool(self.verified[b, i]),
                    "width": int(self.width[b, i]),
                    "children": [int(c) for c in self.child_ids(b, i)],
                    "critics": dict(evaluation.critics) if evaluation else {},
                    "rollouts": [_rollout_dict(r) for r in evaluation.rollouts] if evaluation else [],
                    "merged": list(self.merged[b][i]),
                }
            )
        return {"root": self.roots[b], "nodes": nodes}

    def summary(self, b: int) -> str:
        """An indented text view of tree ``b`` (debugging)."""
        lines = []

        def walk(node: int, indent: int) -> None:
            option = self.options[b][node]
            text = option.text.rstrip("\n") if option else "<root>"
            mark = {UNKNOWN: "", 0: " ✗", 1: " ✓"}[int(self.verified[b, node])] + (
                " (pruned)" if self.pruned[b, node] else ""
            )
            lines.append(
                f"{'  ' * indent}[{node}] N={self.visits[b, node]} Q={self.q(b, node):.3f} {text}{mark}"
            )
            for child in self.child_ids(b, node):
                walk(int(child), indent + 1)

        walk(ROOT, 0)
        return "\n".join(lines)


def _rollout_dict(rollout: Rollout) -> dict[str, Any]:
    return {"text": rollout.text, "score": rollout.score, "verified": rollout.verified}
