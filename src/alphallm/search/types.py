"""The contract between the search and the models: requests out, options and evaluations back.

The search never sees a model. It asks ``expand_fn`` for new options at some nodes and
``evaluate_fn`` for the value of new nodes, each once per wave for every tree at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "EvalRequest",
    "EvaluateFn",
    "Evaluation",
    "ExpandFn",
    "ExpandRequest",
    "Option",
    "Rollout",
]


@dataclass(frozen=True)
class Option:
    """A multi-token step proposed by the policy.

    Attributes:
        text: the option's text (for line options, ending with a newline).
        num_tokens: tokens the policy generated for it.
        logprob: sum of log pi over its tokens (temperature 1), used as a PUCT prior.
        terminal: the option ends the solution (an answer line, EOS or the depth limit).
    """

    text: str
    num_tokens: int = 0
    logprob: float = 0.0
    terminal: bool = False


@dataclass(frozen=True)
class ExpandRequest:
    """Sample ``n`` options after ``state`` (the full text: prompt plus options on the path)."""

    tree: int
    node: int
    state: str
    depth: int
    n: int = 1
    greedy: bool = False
    seed: int = 0


@dataclass(frozen=True)
class Rollout:
    """A completion from a node to the end by the rollout policy, and its outcome."""

    text: str
    score: float | None
    verified: bool | None = None


@dataclass(frozen=True)
class Evaluation:
    """The evaluation of a new node.

    Attributes:
        value: combined critic score in [0, 1] (backed up through the tree).
        verified: verifier outcome of a terminal node (None: not terminal or no verifier).
        critics: each critic's score, for logging and ablations.
        rollouts: fast-rollout completions and their outcomes (labels for critic training).
        prune: a hard verifier found the step wrong: the node is a dead end, never expanded, and
            does not count toward its parent's width (the parent samples another option instead).
    """

    value: float
    verified: bool | None = None
    critics: Mapping[str, float] = field(default_factory=dict)
    rollouts: tuple[Rollout, ...] = ()
    prune: bool = False


@dataclass(frozen=True)
class EvalRequest:
    """Evaluate the node reached by ``option`` from ``parent_state`` (``state`` = both joined)."""

    tree: int
    node: int
    parent_state: str
    option: Option
    depth: int

    @property
    def state(self) -> str:
        return self.parent_state + self.option.text


ExpandFn = Callable[[Sequence[ExpandRequest]], list[list[Option]]]
EvaluateFn = Callable[[Sequence[EvalRequest]], list[Evaluation]]
