"""Training labels from saved search trees (pure functions; the trees are ``Tree.to_dict`` records).

Every label is grounded in a verifier, never in the critics' own backed-up values (that would make
the labels circular):

- **value**: the verified success rate below a node: correct / all verified outcomes among the
  terminals in its subtree and the fast rollouts started there (Math-Shepherd "soft" estimation),
  weighted by how many outcomes there are.
- **PRM**: per step, Math-Shepherd/OmegaPRM style: a step whose node still has a success rate above 0
  is positive; the *first* step whose rate falls to 0 while its parent's was above 0 is negative;
  steps below a first error are not labelled. Sibling pairs (higher vs lower success rate at the
  same parent) support ranking losses.
- **ORM**: the verified outcome of every complete solution (below).

The outcomes are ``complete_solutions``: terminals, rollouts, and the search's greedy completion of
its best path when it read one out (a tree may hold no other outcome when the search runs without
rollouts). A node the tool verifier pruned counts as one verified failure: its step is wrong.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Completion",
    "LabelRow",
    "SiblingPair",
    "complete_solutions",
    "corrupted_rows",
    "label_rows",
    "orm_rows",
    "prm_rows",
    "rated_siblings",
    "sibling_pairs",
    "success_counts",
    "unlearnable",
    "value_rows",
]


@dataclass(frozen=True)
class LabelRow:
    """One training example: the text a critic reads (prompt + solution so far), its target in
    [0, 1] and a weight. ``group`` identifies the problem (for held-out splits)."""

    prompt: str
    solution: str
    target: float
    weight: float = 1.0
    group: str = ""

    @property
    def text(self) -> str:
        return self.prompt + self.solution


@dataclass(frozen=True)
class SiblingPair:
    """Two options at the same state: ``better`` led to a higher verified success rate."""

    prompt: str
    prefix: str
    better: str
    worse: str
    gap: float
    group: str = ""


def tree_nodes(tree: Mapping[str, Any]) -> dict[int, Mapping[str, Any]]:
    return {int(n["id"]): n for n in tree["nodes"]}


def node_solutions(nodes: dict[int, Mapping[str, Any]]) -> dict[int, str]:
    """The text after the prompt at each node (nodes are listed parents first)."""
    out: dict[int, str] = {}
    for node_id, node in nodes.items():
        parent = int(node["parent"])
        out[node_id] = (out[parent] if parent >= 0 else "") + node["text"]
    return out


@dataclass(frozen=True)
class Completion:
    """A complete solution in a tree: the node it ends at or rolls out from, its text, outcome, score."""

    origin: int
    solution: str
    verified: bool | None
    score: float


def complete_solutions(tree: Mapping[str, Any]) -> list[Completion]:
    """Every terminal path and every rollout in the tree, and the search's greedy completion of its
    best path when it read one out (``completed``), with its verified outcome."""
    nodes = tree_nodes(tree)
    solutions = node_solutions(nodes)
    out = []
    for node_id, node in nodes.items():
        if node.get("terminal"):
            out.append(Completion(node_id, solutions[node_id], node.get("verified"), _score(node)))
        for rollout in node.get("rollouts", []):
            score = rollout.get("score")
            out.append(
                Completion(
                    node_id,
                    solutions[node_id] + rollout["text"],
                    rollout.get("verified"),
                    float(score or 0.0),
                )
            )
    if completed := tree.get("completed"):
        origin = int(completed["node"])
        out.append(
            Completion(origin, completed["solution"], completed.get("verified"), _score(nodes[origin]))
        )
    return out


def _score(node: Mapping[str, Any]) -> float:
    """A node's critic value, or its backed-up Q when it has none."""
    score = node.get("value") if node.get("value") is not None else node.get("q", 0.0)
    return float(score or 0.0)


def success_counts(tree: Mapping[str, Any]) -> dict[int, tuple[int, int]]:
    """``node -> (correct, verified)`` over its subtree's verified outcomes and pruned steps."""
    nodes = tree_nodes(tree)
    own = {node_id: [0, 0] for node_id in nodes}
    for completion in complete_solutions(tree):
        if completion.verified is not None:
            own[completion.origin][0] += int(completion.verified)
            own[completion.origin][1] += 1
    for node_id, node in nodes.items():
        if node.get("pruned") and not (node.get("terminal") and node.get("verified") is not None):
            own[node_id][1] += 1
    counts = {node_id: [0, 0] for node_id in nodes}
    for node_id, (correct, total) in own.items():
        current: int = node_id
        while current >= 0:  # add the node's own outcomes to it and every ancestor
            counts[current][0] += correct
            counts[current][1] += total
            current = int(nodes[current]["parent"])
    return {k: (v[0], v[1]) for k, v in counts.items()}


def _group(tree: Mapping[str, Any]) -> str:
    return str(tree.get("problem_id", tree["root"]))


def value_rows(
    trees: Iterable[Mapping[str, Any]], *, min_samples: int = 2, weight_cap: int = 8
) -> list[LabelRow]:
    """Success-rate targets for every node with at least ``min_samples`` verified outcomes below it."""
    rows = []
    for tree in trees:
        nodes = tree_nodes(tree)
        solutions, counts = node_solutions(nodes), success_counts(tree)
        for node_id in nodes:
            correct, total = counts[node_id]
            if total >= min_samples:
                rows.append(
                    LabelRow(
                        tree["root"],
                        solutions[node_id],
                        correct / total,
                        float(min(total, weight_cap)),
                        _group(tree),
                    )
                )
    return rows


def prm_rows(trees: Iterable[Mapping[str, Any]], *, min_samples: int = 2) -> list[LabelRow]:
    """Hard step labels: 1 before the first error, 0 at it (see the module docstring)."""
    rows = []
    for tree in trees:
        nodes = tree_nodes(tree)
        solutions, counts = node_solutions(nodes), success_counts(tree)
        for node_id, node in nodes.items():
            parent = int(node["parent"])
            if parent < 0:
                continue
            correct, total = counts[node_id]
            parent_correct, _ = counts[parent]
            if parent_correct == 0:  # below a first error (or an unsolved prefix): no step label
                continue
            if correct > 0:
                rows.append(LabelRow(tree["root"], solutions[node_id], 1.0, group=_group(tree)))
            elif total >= min_samples or node.get("pruned") or (node.get("terminal") and total >= 1):
                rows.append(LabelRow(tree["root"], solutions[node_id], 0.0, group=_group(tree)))
    return rows


def orm_rows(trees: Iterable[Mapping[str, Any]]) -> list[LabelRow]:
    """Every verified complete solution (``complete_solutions``) with its outcome."""
    rows = []
    seen: set[tuple[str, str]] = set()
    for tree in trees:
        for completion in complete_solutions(tree):
            key = (tree["root"], completion.solution)
            if completion.verified is not None and key not in seen:  # duplicates would only reweight
                seen.add(key)
                rows.append(
                    LabelRow(
                        tree["root"], completion.solution, float(completion.verified), group=_group(tree)
                    )
                )
    return rows


def corrupted_rows(
    rows: Iterable[LabelRow],
    corrupt: Callable[[LabelRow, random.Random], str | None],
    per_row: int,
    rng: random.Random,
) -> list[LabelRow]:
    """Made negatives for an outcome critic: up to ``per_row`` distinct wrong variants of every
    correct solution (``corrupt``: the task's model of its policies' mistakes, ``Task.corrupt``),
    each labelled 0, as contrast where the searched trees hold few right solutions."""
    out = []
    for row in rows:
        if row.target < 1.0:
            continue
        made: set[str] = set()
        for _ in range(3 * per_row):  # a corruption can fail or repeat: a few tries each
            wrong = corrupt(row, rng)
            if wrong is not None and wrong not in made:
                made.add(wrong)
                out.append(LabelRow(row.prompt, wrong, 0.0, row.weight, row.group))
            if len(made) == per_row:
                break
    return out


def rated_siblings(
    nodes: Mapping[int, Mapping[str, Any]],
    counts: Mapping[int, tuple[int, int]],
    node_id: int,
    *,
    min_samples: int,
) -> tuple[float, int, float, int] | None:
    """``(high, best, low, worst)``: the children of ``node_id`` with the highest and the lowest verified
    success rate among those with ``min_samples`` outcomes, or None without two distinct ones. An
    identical sibling (a re-sampled duplicate) differs only by rollout luck, so it is never the rival."""
    rated = [
        (counts[int(c)][0] / counts[int(c)][1], int(c))
        for c in nodes[node_id].get("children", [])
        if counts[int(c)][1] >= min_samples
    ]
    if len(rated) < 2:
        return None
    high, best = max(rated)
    rivals = [(rate, c) for rate, c in rated if nodes[c]["text"] != nodes[best]["text"]]
    if not rivals:
        return None
    low, worst = min(rivals)
    return high, best, low, worst


def sibling_pairs(
    trees: Iterable[Mapping[str, Any]], *, min_samples: int = 2, min_gap: float = 0.3
) -> list[SiblingPair]:
    """At each node, the best- and worst-rated children (by verified success rate) when they differ
    by at least ``min_gap``: pairs for ranking losses and step-DPO."""
    pairs = []
    for tree in trees:
        nodes = tree_nodes(tree)
        solutions, counts = node_solutions(nodes), success_counts(tree)
        for node_id in nodes:
            found = rated_siblings(nodes, counts, node_id, min_samples=min_samples)
            if found is not None and found[0] - found[2] >= min_gap:
                high, best, low, worst = found
                pairs.append(
                    SiblingPair(
                        tree["root"],
                        solutions[node_id],
                        nodes[best]["text"],
                        nodes[worst]["text"],
                        high - low,
                        _group(tree),
                    )
                )
    return pairs


def label_rows(kind: str, trees: Iterable[Mapping[str, Any]], min_samples: int = 2) -> list[LabelRow]:
    """The labels a critic of ``kind`` (value, prm or orm) learns from."""
    if kind == "value":
        return value_rows(trees, min_samples=min_samples)
    if kind == "prm":
        return prm_rows(trees, min_samples=min_samples)
    return orm_rows(trees)


def unlearnable(rows: Sequence[LabelRow], minimum: int) -> str | None:
    """Why ``rows`` cannot train a critic, or None: fewer than ``minimum`` labels, or labels that all
    agree (every solution failed, say), from which a head learns one constant and ranks nothing."""
    if len(rows) < minimum:
        return f"only {len(rows)} labels"
    targets = {row.target for row in rows}
    if len(targets) == 1:
        return f"all {len(rows)} labels are {targets.pop():g}"
    return None
