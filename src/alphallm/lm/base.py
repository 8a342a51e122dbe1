"""The language-model contract used by search, critics and evaluation.

A backend samples *options* (continuations ended by a stop string, EOS or a token limit) for a
batch of text states, n per state, and scores given continuations. Every call is batched, and
every token the model processes is counted in ``usage``, so compute comparisons are honest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["Completion", "LanguageModel", "Metered", "Usage", "sample_counts"]


@dataclass
class Completion:
    """One sampled continuation.

    Attributes:
        text: the continuation; it ends with the stop string when ``finish_reason == "stop"``.
        token_ids: the generated tokens, EOS included when the model ended the text.
        logprobs: log pi(token | context) under the model at temperature 1, one per token id.
        finish_reason: ``"stop"`` (a stop string), ``"eos"`` or ``"length"`` (max_tokens reached).
    """

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "length"

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class Usage:
    """Compute spent by one model: batched calls, forward passes and tokens by kind."""

    calls: int = 0  # batched sample()/logprobs() calls
    forward_passes: int = 0
    prefill_tokens: int = 0  # context tokens encoded (prompts, and everything scored)
    generated_tokens: int = 0  # tokens sampled, one forward position each

    def add(self, other: Usage) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def copy(self) -> Usage:
        return Usage(**asdict(self))

    def since(self, earlier: Usage) -> Usage:
        """The usage accumulated after the ``earlier`` snapshot."""
        return Usage(**{k: v - getattr(earlier, k) for k, v in asdict(self).items()})

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@runtime_checkable
class LanguageModel(Protocol):
    """What the rest of alphallm needs from a model backend."""

    usage: Usage

    def sample(
        self,
        states: Sequence[str],
        *,
        n: int | Sequence[int] = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        max_tokens: int = 64,
        seed: int | None = None,
    ) -> list[list[Completion]]:
        """For each state, ``n`` continuations (one count for all, or one per state; ``temperature=0``
        is greedy). Shape: [len(states)][n]."""
        ...

    def logprobs(self, states: Sequence[str], continuations: Sequence[str]) -> list[list[float]]:
        """Per-token log pi(continuation | state) for each pair, under the model at temperature 1."""
        ...


def sample_counts(states: Sequence[str], n: int | Sequence[int], max_tokens: int) -> list[int]:
    """``sample``'s ``n`` as one count per state, checked (a backend's first step)."""
    counts = [int(c) for c in n] if isinstance(n, Sequence) else [int(n)] * len(states)
    if len(counts) != len(states) or min(counts, default=1) < 1 or max_tokens < 1:
        raise ValueError("n (one per state, or one for all) and max_tokens must be at least 1")
    return counts


class Metered:
    """A view of a model with its own ``usage``: the policy and the rollout policy can share one
    model (and its prefix cache) while their compute is counted apart."""

    def __init__(self, lm: LanguageModel) -> None:
        self.lm = lm
        self.usage = Usage()

    def sample(self, states: Sequence[str], **kwargs: object) -> list[list[Completion]]:
        before = self.lm.usage.copy()
        try:
            return self.lm.sample(states, **kwargs)  # type: ignore[arg-type]
        finally:
            self.usage.add(self.lm.usage.since(before))

    def logprobs(self, states: Sequence[str], continuations: Sequence[str]) -> list[list[float]]:
        before = self.lm.usage.copy()
        try:
            return self.lm.logprobs(states, continuations)
        finally:
            self.usage.add(self.lm.usage.since(before))
