"""Fast rollouts (AlphaLLM §4.3.4): complete a new node's solution r times with a rollout policy
(a smaller model, or the policy itself) and score each completion with an outcome critic."""

from __future__ import annotations

from collections.abc import Sequence

from alphallm.critics.base import Critic, CriticInput
from alphallm.evaluation import finish_solution
from alphallm.lm.base import LanguageModel
from alphallm.search.types import Rollout
from alphallm.tasks.base import Task

__all__ = ["RolloutCritic"]


class RolloutCritic:
    """Completes solutions with ``lm`` and scores them with ``outcome`` (tool critic or learned ORM).

    Args:
        n: completions per node (the paper: 4).
        temperature: 0 means one greedy completion (then ``n`` is 1).
        verify: also record ``task.check`` on each completion (labels for critic training).
        max_tokens: tokens a completion may generate (None: the task's ``max_solution_tokens``).
    """

    name = "rollout"

    def __init__(
        self,
        task: Task,
        lm: LanguageModel,
        outcome: Critic,
        *,
        n: int = 1,
        temperature: float = 0.0,
        verify: bool = True,
        max_tokens: int | None = None,
    ) -> None:
        self.task, self.lm, self.outcome = task, lm, outcome
        self.max_tokens = task.token_limit(max_tokens)
        self.n = 1 if temperature <= 0 else n
        self.temperature = temperature
        self.verify = verify

    def run(self, items: Sequence[CriticInput], *, seed: int = 0) -> list[tuple[Rollout, ...]]:
        """Rollouts for each non-terminal item (terminal items get none)."""
        todo = [i for i, item in enumerate(items) if not item.terminal]
        out: list[tuple[Rollout, ...]] = [() for _ in items]
        if not todo:
            return out
        states = [self.task.format_prompt(items[i].problem) + items[i].solution for i in todo]
        results = self.lm.sample(
            states,
            n=self.n,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            seed=seed,
        )
        finished: list[tuple[int, str]] = []
        for i, completions in zip(todo, results):
            finished += [(i, finish_solution(self.task, completion)) for completion in completions]
        full = [CriticInput(items[i].problem, items[i].solution + text, True) for i, text in finished]
        scores = self.outcome.score(full)
        rollouts: dict[int, list[Rollout]] = {i: [] for i in todo}
        for (i, text), item, score in zip(finished, full, scores):
            verified = self.task.check(item.problem, item.solution) if self.verify else None
            rollouts[i].append(Rollout(text=text, score=score, verified=verified))
        for i, kept in rollouts.items():
            out[i] = tuple(kept)
        return out
