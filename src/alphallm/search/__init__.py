"""Pure, batched tree search over B problems. Imports no model library: models arrive as callables.

``search`` runs eta-MCTS; ``sample_chains``, ``beam_search`` and ``best_first`` are the baselines
in the same harness; ``read_out`` picks a tree's answer and says which rule picked it.
"""

from __future__ import annotations

from alphallm.search.baselines import beam_search, best_first, sample_chains
from alphallm.search.config import MCTSConfig
from alphallm.search.mcts import search
from alphallm.search.readout import READOUTS, Choice, read_out
from alphallm.search.tree import ROOT, Tree
from alphallm.search.types import (
    EvalRequest,
    EvaluateFn,
    Evaluation,
    ExpandFn,
    ExpandRequest,
    Option,
    Rollout,
)

__all__ = [
    "READOUTS",
    "ROOT",
    "Choice",
    "EvalRequest",
    "EvaluateFn",
    "Evaluation",
    "ExpandFn",
    "ExpandRequest",
    "MCTSConfig",
    "Option",
    "Rollout",
    "Tree",
    "beam_search",
    "best_first",
    "read_out",
    "sample_chains",
    "search",
]
