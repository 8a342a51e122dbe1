"""Baselines in the same harness as eta-MCTS: the same callables, trees and compute accounting.

- ``sample_chains``: n independent step-by-step solutions per problem (greedy when n == 1 and
  ``greedy``); read out by majority vote (self-consistency) or by the evaluator (best-of-N).
- ``beam_search``: step-level beam search scored by the evaluator.
- ``best_first``: expand the highest-valued open node next (the A* reading of "Q*").
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np

from alphallm.search.tree import ROOT, Tree
from alphallm.search.types import EvaluateFn, ExpandFn, ExpandRequest

__all__ = ["beam_search", "best_first", "sample_chains"]


def _expand_and_add(
    tree: Tree,
    frontier: list[tuple[int, int, int]],
    expand_fn: ExpandFn,
    rng: np.random.Generator,
    *,
    greedy: bool,
    max_depth: int,
) -> list[tuple[int, int]]:
    """Expands (tree, node, n) triples in one expand_fn call; returns the new (tree, node) pairs."""
    requests = [
        ExpandRequest(
            tree=b,
            node=node,
            state=tree.state(b, node),
            depth=int(tree.depth[b, node]),
            n=n,
            greedy=greedy,
            seed=int(rng.integers(0, 2**31 - 1)),
        )
        for b, node, n in frontier
    ]
    results = expand_fn(requests) if requests else []
    added = []
    for (b, node, _), options in zip(frontier, results):
        for option in options:
            child = tree.add_child(b, node, option)
            if tree.depth[b, child] >= max_depth:
                tree.terminal[b, child] = True
            added.append((b, child))
    return added


def _evaluate(tree: Tree, nodes: list[tuple[int, int]], evaluate_fn: EvaluateFn) -> None:
    requests = [tree.eval_request(b, node) for b, node in nodes]
    for (b, node), evaluation in zip(nodes, evaluate_fn(requests) if requests else []):
        tree.set_evaluation(b, node, evaluation)
        tree.backup(b, node, evaluation.value)


def sample_chains(
    roots: Sequence[str],
    *,
    expand_fn: ExpandFn,
    evaluate_fn: EvaluateFn | None,
    n: int,
    max_depth: int,
    rng: np.random.Generator,
    greedy: bool = False,
) -> Tree:
    """``n`` independent solutions per root, one option per step, all chains batched together.

    Each chain is a path from the root; terminal nodes are evaluated when ``evaluate_fn`` is given
    (best-of-N needs the scores, self-consistency does not).
    """
    tree = Tree.create(list(roots), max_nodes=n * max_depth + 1, max_children=max(n, 1))
    frontier = [(b, ROOT, n) for b in range(len(roots))]
    for _ in range(max_depth):
        added = _expand_and_add(tree, frontier, expand_fn, rng, greedy=greedy, max_depth=max_depth)
        done = [(b, node) for b, node in added if tree.terminal[b, node]]
        if evaluate_fn is not None:
            _evaluate(tree, done, evaluate_fn)
        frontier = [(b, node, 1) for b, node in added if not tree.terminal[b, node]]
        if not frontier:
            break
    tree.simulations[:] = tree.num_nodes - 1
    return tree


def beam_search(
    roots: Sequence[str],
    *,
    expand_fn: ExpandFn,
    evaluate_fn: EvaluateFn,
    beam_width: int,
    expansions: int,
    max_depth: int,
    rng: np.random.Generator,
) -> Tree:
    """Keeps the ``beam_width`` best open nodes per problem; each gets ``expansions`` children per step.

    Finished (terminal) nodes leave the beam; the search stops when a problem's beam is empty.
    """
    tree = Tree.create(
        list(roots), max_nodes=beam_width * expansions * max_depth + expansions + 1, max_children=expansions
    )
    beams = {b: [ROOT] for b in range(len(roots))}
    for _ in range(max_depth):
        frontier = [(b, node, expansions) for b, nodes in beams.items() for node in nodes]
        if not frontier:
            break
        added = _expand_and_add(tree, frontier, expand_fn, rng, greedy=False, max_depth=max_depth)
        _evaluate(tree, added, evaluate_fn)
        beams = {}
        for b in range(len(roots)):
            open_nodes = [node for bb, node in added if bb == b and not tree.terminal[b, node]]
            open_nodes.sort(key=lambda node: -tree.raw_value[b, node])
            if open_nodes:
                beams[b] = open_nodes[:beam_width]
    tree.simulations[:] = tree.num_nodes - 1
    return tree


def best_first(
    roots: Sequence[str],
    *,
    expand_fn: ExpandFn,
    evaluate_fn: EvaluateFn,
    expansions: int,
    budget: int,
    max_depth: int,
    rng: np.random.Generator,
    stop_at_first: bool = True,
) -> Tree:
    """Best-first search on the value estimate: pop the open node with the highest value, give it
    ``expansions`` children. ``budget`` bounds the expansions per problem; with ``stop_at_first`` a
    problem stops at its first terminal whose value is at least 0.5."""
    tree = Tree.create(list(roots), max_nodes=budget * expansions + 1, max_children=expansions)
    queues: dict[int, list[tuple[float, int]]] = {b: [(0.0, ROOT)] for b in range(len(roots))}
    used = np.zeros(len(roots), np.int32)
    stopped: set[int] = set()
    while True:
        frontier = []
        for b, queue in queues.items():
            if queue and used[b] < budget:
                _, node = heapq.heappop(queue)
                frontier.append((b, node, expansions))
                used[b] += 1
        if not frontier:
            break
        added = _expand_and_add(tree, frontier, expand_fn, rng, greedy=False, max_depth=max_depth)
        _evaluate(tree, added, evaluate_fn)
        for b, node in added:
            if tree.terminal[b, node]:
                if stop_at_first and tree.raw_value[b, node] >= 0.5:
                    stopped.add(b)
                    queues[b] = []
            elif b not in stopped:
                heapq.heappush(queues[b], (-float(tree.raw_value[b, node]), node))
    tree.simulations[:] = tree.num_nodes - 1
    return tree
