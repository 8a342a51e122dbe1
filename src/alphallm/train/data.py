"""Policy training data from search trees (pure functions over ``Tree.to_dict`` records).

- SFT rows: per problem, the verified-correct complete solutions (terminal paths, rollouts and the
  search's greedy completion of its best path) with the highest critic score, deduplicated
  (AlphaLLM §4.5 keeps one; ``per_problem`` keeps more).
- Step-DPO pairs (r->Q*; qstar.md §4.2): at a node with two rated children, the child with the
  higher verified success rate (and a correct completion below it) against one with a clearly lower
  rate (and a wrong completion below it). ``span="completion"`` (the default) continues both sides to
  a terminal, so each ends at a real end of solution (r->Q*); ``span="step"`` keeps only the two
  sibling options (Step-DPO, Lai et al.: the loss sits on the step that differs, and no EOS follows
  it). The verified completions decide the pair either way.

Both take only right solutions that ``states_answer`` (the loop passes ``Task.is_terminal``: an answer
line): a verifier that falls back to reading the last number (gsm8k's) calls a solution right that
never states an answer, which a policy should not be taught to write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from alphallm.train.dpo import Pair
from alphallm.train.labels import (
    Completion,
    complete_solutions,
    node_solutions,
    rated_siblings,
    success_counts,
    tree_nodes,
)

__all__ = ["SPANS", "dpo_pairs", "sft_rows"]


def sft_rows(
    trees: Iterable[Mapping[str, Any]],
    *,
    per_problem: int = 1,
    states_answer: Callable[[str], bool] | None = None,
) -> list[tuple[str, str]]:
    """(prompt, solution) rows: the best-scored verified-correct solutions of each problem (of those
    that ``states_answer``, when given)."""
    rows: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    kept: dict[str, int] = {}  # rows per problem prompt (a problem may have several trees)
    for tree in trees:
        correct = [c for c in complete_solutions(tree) if _right(c, states_answer) and c.solution.strip()]
        correct.sort(key=lambda c: (-c.score, len(c.solution)))
        for completion in correct:
            key = (tree["root"], completion.solution)
            if kept.get(tree["root"], 0) >= per_problem:
                break
            if key not in seen:
                seen.add(key)
                rows.append(key)
                kept[tree["root"]] = kept.get(tree["root"], 0) + 1
    return rows


def _subtree(nodes: dict[int, Mapping[str, Any]], root: int) -> set[int]:
    out, stack = set(), [root]
    while stack:
        node = stack.pop()
        out.add(node)
        stack.extend(int(c) for c in nodes[node].get("children", []))
    return out


SPANS = ("step", "completion")


def dpo_pairs(
    trees: Iterable[Mapping[str, Any]],
    *,
    min_gap: float = 0.5,
    min_samples: int = 1,
    per_tree: int = 4,
    span: str = "completion",
    states_answer: Callable[[str], bool] | None = None,
) -> list[Pair]:
    """Sibling preference pairs, each grounded in a verified-correct and a wrong completion (at most
    one per parent, ``per_tree`` per tree; the correct one among those that ``states_answer``); see the
    module docstring for ``span``."""
    if span not in SPANS:
        raise ValueError(f"span must be one of {SPANS}")
    pairs: list[Pair] = []
    for tree in trees:
        nodes = tree_nodes(tree)
        solutions, counts = node_solutions(nodes), success_counts(tree)
        completions = complete_solutions(tree)
        right = [c for c in completions if _right(c, states_answer)]
        made = 0
        for node_id in nodes:
            found = rated_siblings(nodes, counts, node_id, min_samples=min_samples)
            if found is None or found[0] - found[2] < min_gap:
                continue
            _, best, _, worst = found
            prefix = solutions[node_id]
            good = _pick(right, _subtree(nodes, best), prefix, verified=True)
            bad = _pick(completions, _subtree(nodes, worst), prefix, verified=False)
            # A step the tool verifier rejected is wrong by itself: a step pair needs no completion
            # below it (with a step verifier, wrong steps are pruned, so they rarely have one).
            if span == "step" and bad is None and nodes[worst].get("pruned"):
                bad = nodes[worst]["text"]
            if good is None or bad is None or good == bad:
                continue
            if span == "step":
                both_end = bool(nodes[best].get("terminal")) and bool(nodes[worst].get("terminal"))
                pairs.append(Pair(tree["root"] + prefix, nodes[best]["text"], nodes[worst]["text"], both_end))
            else:
                pairs.append(Pair(tree["root"] + prefix, good, bad))
            made += 1
            if made >= per_tree:
                break
    return pairs


def _right(completion: Completion, states_answer: Callable[[str], bool] | None) -> bool:
    """Verified correct, and stating its answer where that is asked."""
    return completion.verified is True and (states_answer is None or states_answer(completion.solution))


def _pick(completions: list[Completion], subtree: set[int], prefix: str, *, verified: bool) -> str | None:
    """The continuation after ``prefix`` of the best-scored (for correct) or worst-scored (for wrong)
    complete solution below the subtree's root."""
    found = [
        c
        for c in completions
        if c.origin in subtree and c.verified is verified and c.solution.startswith(prefix)
    ]
    if not found:
        return None
    chosen = max(found, key=lambda c: c.score) if verified else min(found, key=lambda c: c.score)
    return chosen.solution[len(prefix) :]
