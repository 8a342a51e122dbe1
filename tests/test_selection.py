"""Selection in eta-MCTS: the UCT and PUCT formulas, and what they do on bandits with a known best arm."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from tests.test_search import _h

from alphallm.search import EvalRequest, Evaluation, ExpandRequest, MCTSConfig, Option, Tree, search
from alphallm.search.readout import most_visited
from alphallm.search.selection import priors_from_logprobs, puct_scores, uct_scores
from alphallm.search.tree import ROOT


def test_uct_and_puct_formulas() -> None:
    q, visits = np.array([0.5, 0.2, 0.0]), np.array([4, 1, 0])
    scores = uct_scores(q, visits, 5, c=1.0)
    assert scores[0] == pytest.approx(0.5 + math.sqrt(math.log(5) / 4))
    assert scores[1] == pytest.approx(0.2 + math.sqrt(math.log(5) / 1))
    assert scores[2] == np.inf
    prior = np.array([0.7, 0.2, 0.1])
    assert puct_scores(q, visits, prior, 5, c=2.0)[1] == pytest.approx(0.2 + 2 * 0.2 * math.sqrt(5) / 2)


class Bandit:
    """A root with five arms; arm i ends the episode with value p[i]. Arm 3 is best."""

    p = (0.2, 0.5, 0.3, 0.8, 0.1)

    def expand(self, requests: Sequence[ExpandRequest]) -> list[list[Option]]:
        out = []
        for r in requests:
            arm_ids = [_h(r.seed, k) % 5 for k in range(r.n)]
            out.append([Option(f"arm {i}\n", terminal=True) for i in arm_ids])
        return out

    def evaluate(self, requests: Sequence[EvalRequest]) -> list[Evaluation]:
        # The root (empty option) has no arm: an evaluation without critics leaves v(root) unknown.
        return [
            Evaluation(value=self.p[int(r.option.text.split()[1])] if r.option.text else 0.5)
            for r in requests
        ]


def _pull(bandit: Bandit, simulations: int, **settings: Any) -> tuple[Tree, dict[str, int]]:
    """eta-MCTS on the bandit: five arms at the root, duplicates re-sampled; each arm's visits."""
    config = MCTSConfig(
        num_simulations=simulations,
        c_min_root=5,
        c_max_root=5,
        alpha=0.0,
        merge_retries=8,
        merge_threshold=0.99,
        greedy_first_child=False,
        **settings,
    )
    tree = search(
        ["pull\n"],
        expand_fn=bandit.expand,
        evaluate_fn=bandit.evaluate,
        config=config,
        rng=np.random.default_rng(0),
    )
    return tree, {tree.options[0][c].text: int(tree.visits[0, c]) for c in tree.child_ids(0, ROOT)}


def test_bandit_finds_the_best_arm() -> None:
    tree, arms = _pull(Bandit(), 200, adaptive_branching=True, merge="resample")
    assert len(arms) == 5  # state merge re-sampled duplicate arms until all five were tried
    assert max(arms, key=arms.get) == "arm 3\n"
    assert arms["arm 3\n"] > 0.5 * 200
    assert most_visited(tree, 0).solution == "arm 3\n"


class PriorBandit(Bandit):
    """Five arms worth the same; the policy writes arm 3 twenty times likelier than each other arm."""

    p = (0.5,) * 5

    def expand(self, requests: Sequence[ExpandRequest]) -> list[list[Option]]:
        return [
            [replace(o, logprob=0.0 if o.text == "arm 3\n" else -3.0) for o in options]
            for options in super().expand(requests)
        ]


@pytest.mark.parametrize("selection", ["uct", "puct"])
def test_puct_follows_the_policys_prior_where_values_tie(selection: str) -> None:
    tree, arms = _pull(PriorBandit(), 100, selection=selection)
    kids = tree.child_ids(0, ROOT)
    assert len(arms) == 5
    if selection == "puct":  # softmax prior of arm 3: 1 / (1 + 4 e^-3) = 0.83
        assert priors_from_logprobs(tree.logprob[0, kids]).max() == pytest.approx(1 / (1 + 4 * math.exp(-3)))
        assert arms["arm 3\n"] > 0.6 * 100
    else:  # UCT ignores the prior: equal values share the visits
        assert max(arms.values()) - min(arms.values()) <= 1
