"""eta-MCTS (AlphaLLM §4.3): option-level MCTS with importance-based adaptive branching, state
merge, and batched waves across B problems.

Each wave selects up to ``leaves_per_wave`` leaves in every live tree (virtual loss spreads them
over different paths), sends all expansions to ``expand_fn`` in one call and all new nodes to
``evaluate_fn`` in one call, then backs the values up. Selection is UCT on backed-up means (or
PUCT with the policy's option probabilities); a node is widened while it has fewer children than
``n(s)``, which grows with its importance ``I(s)``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from alphallm.search.config import MCTSConfig
from alphallm.search.selection import (
    allowed_children,
    importance,
    priors_from_logprobs,
    puct_scores,
    similarity,
    uct_scores,
)
from alphallm.search.tree import ROOT, Tree
from alphallm.search.types import EvalRequest, EvaluateFn, ExpandFn, ExpandRequest, Option

__all__ = ["search"]

log = logging.getLogger(__name__)


@dataclass
class _Wave:
    """What one wave collected: expansions per (tree, node), terminal revisits, paths with virtual loss."""

    expansions: dict[tuple[int, int], int]
    revisits: list[tuple[int, int]]
    virtual: np.ndarray  # (B, N) virtual visits added during selection


def search(
    roots: Sequence[str],
    *,
    expand_fn: ExpandFn,
    evaluate_fn: EvaluateFn,
    config: MCTSConfig,
    rng: np.random.Generator,
    on_wave: Callable[[Tree], None] | None = None,
) -> Tree:
    """Runs eta-MCTS from each root (a prompt) and returns the B trees.

    Args:
        roots: B prompts.
        expand_fn: samples options for a batch of ``ExpandRequest``s.
        evaluate_fn: scores a batch of new nodes in [0, 1].
        config: the search settings.
        rng: consumed only to draw sampling seeds, so equal seeds give equal trees.
        on_wave: called after every wave (progress reporting).
    """
    tree = Tree.create(list(roots), max_nodes=config.num_simulations + 1, max_children=config.max_children)
    tree.width[:, ROOT] = _initial_width(config, 0)
    if config.evaluate_root:
        _evaluate_roots(tree, evaluate_fn)
    while True:
        wave = _select_wave(tree, config)
        if not wave.expansions and not wave.revisits:
            break
        _revisit(tree, wave.revisits)
        new_nodes = _expand(tree, wave.expansions, expand_fn, config, rng)
        _evaluate(tree, new_nodes, evaluate_fn, config)
        if on_wave is not None:
            on_wave(tree)
    return tree


# -- selection ----------------------------------------------------------------------------------
def _initial_width(config: MCTSConfig, depth: int) -> int:
    if not config.adaptive_branching:
        return config.fixed_width
    return config.c_min_root if depth == 0 else config.c_min


def _select_wave(tree: Tree, config: MCTSConfig) -> _Wave:
    wave = _Wave(expansions=defaultdict(int), revisits=[], virtual=np.zeros(tree.visits.shape, np.float64))
    for b in range(tree.batch_size):
        for _ in range(config.leaves_per_wave):
            if tree.simulations[b] >= config.num_simulations:
                break
            leaf = _select(tree, b, wave, config)
            if leaf is None:  # every way down waits on an expansion already in this wave
                break
            tree.simulations[b] += 1
            for node in tree.path(b, leaf):
                wave.virtual[b, node] += config.virtual_loss
            if tree.terminal[b, leaf] or tree.pruned[b, leaf]:
                wave.revisits.append((b, leaf))
            else:
                wave.expansions[(b, leaf)] += 1
    return wave


def _select(tree: Tree, b: int, wave: _Wave, config: MCTSConfig) -> int | None:
    """Walks down from the root: expand a node that may have more children, else follow the best
    child by UCT/PUCT (virtual visits count as losses)."""
    node = ROOT
    while True:
        if tree.terminal[b, node] or tree.pruned[b, node]:
            return node
        pending = wave.expansions.get((b, node), 0)
        slots_left = tree.num_children[b, node] + pending < tree.children.shape[2]
        open_ = slots_left and not tree.closed[b, node]
        if open_ and tree.live_children(b, node) + pending < tree.width[b, node]:
            return node
        kids = tree.child_ids(b, node)
        if kids.size == 0:
            return None
        # A dead end backs up the same 0 every time it is chosen: choose among the live children,
        # or wait for the one being sampled; only a node with nothing else left revisits its dead ends.
        live = kids[~tree.pruned[b, kids]]
        if live.size == 0 and pending:
            return None
        if live.size > 0:
            kids = live
        visits = tree.visits[b, kids] + wave.virtual[b, kids]
        q = np.divide(tree.value_sum[b, kids], visits, out=np.zeros(kids.size), where=visits > 0)
        parent_visits = float(tree.visits[b, node] + wave.virtual[b, node])
        if config.selection == "puct":
            prior = priors_from_logprobs(tree.logprob[b, kids])
            scores = puct_scores(q, visits, prior, parent_visits, c=config.c_uct)
        else:
            scores = uct_scores(q, visits, parent_visits, c=config.c_uct)
        node = int(kids[int(np.argmax(scores))])


def _revisit(tree: Tree, revisits: list[tuple[int, int]]) -> None:
    """A terminal (or dead end) selected again backs up its cached value again (no model call)."""
    for b, node in revisits:
        tree.backup(b, node, float(tree.raw_value[b, node]))


# -- expansion and state merge ------------------------------------------------------------------
def _expand(
    tree: Tree,
    expansions: dict[tuple[int, int], int],
    expand_fn: ExpandFn,
    config: MCTSConfig,
    rng: np.random.Generator,
) -> list[tuple[int, int]]:
    """Samples the wave's options in one call (plus re-sample rounds for state merge); returns the
    new nodes as (tree, node)."""
    slots = []  # one entry per requested option: (b, node, greedy)
    for (b, node), count in expansions.items():
        for k in range(count):
            greedy = config.greedy_first_child and tree.num_children[b, node] == 0 and k == 0
            slots.append((b, node, greedy))
    candidates = _sample(tree, slots, expand_fn, rng)
    accepted: dict[tuple[int, int], list[str]] = defaultdict(list)  # texts kept this wave, per node
    best: list[tuple[Option, float]] = [(option, 2.0) for option in candidates]
    todo = list(range(len(slots)))
    for attempt in range(config.merge_retries + 1 if config.merge != "off" else 1):
        retry = []
        for i in todo:
            b, node, _ = slots[i]
            option = candidates[i]
            closeness = _closeness(tree, b, node, option.text, accepted[(b, node)])
            if closeness < best[i][1]:
                best[i] = (option, closeness)
            if config.merge == "off" or closeness < config.merge_threshold or attempt == config.merge_retries:
                accepted[(b, node)].append(best[i][0].text)
            else:
                retry.append(i)
        if not retry:
            break
        resampled = _sample(tree, [(slots[i][0], slots[i][1], False) for i in retry], expand_fn, rng)
        for i, option in zip(retry, resampled):
            candidates[i] = option
        todo = retry
    return _add_nodes(tree, slots, best, config)


def _sample(
    tree: Tree, slots: list[tuple[int, int, bool]], expand_fn: ExpandFn, rng: np.random.Generator
) -> list[Option]:
    """One batched expand_fn call for the slots, grouped into one request per (tree, node, greedy)."""
    groups: dict[tuple[int, int, bool], list[int]] = defaultdict(list)
    for i, key in enumerate(slots):
        groups[key].append(i)
    requests = [
        ExpandRequest(
            tree=b,
            node=node,
            state=tree.state(b, node),
            depth=int(tree.depth[b, node]),
            n=len(members),
            greedy=greedy,
            seed=int(rng.integers(0, 2**31 - 1)),
        )
        for (b, node, greedy), members in groups.items()
    ]
    results = expand_fn(requests) if requests else []
    out: list[Option | None] = [None] * len(slots)
    for request, members, options in zip(requests, groups.values(), results):
        if len(options) != request.n:
            raise ValueError(f"expand_fn returned {len(options)} options for a request of {request.n}")
        for i, option in zip(members, options):
            out[i] = option
    return [o for o in out if o is not None]


def _closeness(tree: Tree, b: int, node: int, text: str, accepted: list[str]) -> float:
    """Highest similarity of ``text`` to the node's existing children and this wave's accepted ones."""
    siblings = [tree.option_text(b, int(c)) for c in tree.child_ids(b, node)]
    return max((similarity(text, s) for s in siblings + accepted), default=0.0)


def _add_nodes(
    tree: Tree, slots: list[tuple[int, int, bool]], best: list[tuple[Option, float]], config: MCTSConfig
) -> list[tuple[int, int]]:
    new_nodes = []
    for (b, node, _), (option, closeness) in zip(slots, best):
        if config.merge == "merge" and closeness >= config.merge_threshold and tree.num_children[b, node] > 0:
            # Merge into the most similar sibling: count a visit with its value, keep no new subtree.
            twin = max(
                tree.child_ids(b, node), key=lambda c: similarity(option.text, tree.option_text(b, int(c)))
            )
            tree.merged[b][int(twin)].append(option.text)
            if not np.isnan(tree.raw_value[b, twin]):
                tree.backup(b, int(twin), float(tree.raw_value[b, twin]))
            continue
        if config.drop_twins and closeness >= 1.0:
            # Every sample repeated a sibling word for word, so the policy has nothing new to say
            # here, and a twin's subtree would spend tokens re-deriving its sibling's. The node takes
            # no more children, and the simulation, which added nothing, goes back to the budget.
            tree.closed[b, node] = True
            tree.simulations[b] -= 1
            continue
        if tree.num_children[b, node] >= tree.children.shape[2]:
            continue
        child = tree.add_child(b, node, option)
        if tree.depth[b, child] >= config.max_depth:
            tree.terminal[b, child] = True
        tree.width[b, child] = _initial_width(config, int(tree.depth[b, child]))
        new_nodes.append((b, child))
    return new_nodes


# -- evaluation, backup, widening ---------------------------------------------------------------
def _evaluate_roots(tree: Tree, evaluate_fn: EvaluateFn) -> None:
    """v(root), so the root's importance is defined from its first child on (it is not backed up).

    An evaluation no critic could give (empty ``critics``) leaves v(root) unknown: importance then
    falls back to the spread of the children."""
    requests = [
        EvalRequest(tree=b, node=ROOT, parent_state=tree.roots[b], option=Option(""), depth=0)
        for b in range(tree.batch_size)
    ]
    for b, evaluation in enumerate(evaluate_fn(requests)):
        if evaluation.critics:
            tree.set_evaluation(b, ROOT, evaluation)


def _evaluate(
    tree: Tree, new_nodes: list[tuple[int, int]], evaluate_fn: EvaluateFn, config: MCTSConfig
) -> None:
    requests = [tree.eval_request(b, node) for b, node in new_nodes]
    evaluations = evaluate_fn(requests) if requests else []
    if len(evaluations) != len(requests):
        raise ValueError(f"evaluate_fn returned {len(evaluations)} evaluations for {len(requests)} nodes")
    for (b, node), evaluation in zip(new_nodes, evaluations):
        tree.set_evaluation(b, node, evaluation)
        tree.backup(b, node, evaluation.value)
    if config.adaptive_branching:  # every ancestor's importance may have changed with the backup
        ancestors = {(b, node) for b, new in new_nodes for node in tree.path(b, new)[:-1]}
        for b, node in sorted(ancestors):
            _widen(tree, b, node, config)


def _widen(tree: Tree, b: int, node: int, config: MCTSConfig) -> None:
    """Recomputes ``n(s)`` from the node's importance; the width only grows (as in the code).

    Children are valued by their backed-up means Q (the released code) or by their own evaluations
    v(s, o) (the paper's formula); Q lets a failure deep below a child widen the node above it.
    """
    kids = tree.child_ids(b, node)
    if config.importance == "q":
        kids = kids[tree.visits[b, kids] > 0]
        values = tree.value_sum[b, kids] / tree.visits[b, kids]
    else:
        values = tree.raw_value[b, kids]
        values = values[~np.isnan(values)]
    node_importance = importance(values, float(tree.raw_value[b, node]))
    width = allowed_children(
        node_importance,
        int(tree.depth[b, node]),
        alpha=config.alpha,
        c_min_root=config.c_min_root,
        c_max_root=config.c_max_root,
        c_min=config.c_min,
        c_max=config.c_max,
    )
    tree.width[b, node] = max(int(tree.width[b, node]), width)
