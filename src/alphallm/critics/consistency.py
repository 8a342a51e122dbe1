"""The consistency critic: an outcome critic that asks how many of the policy's own solutions agree.

A complete solution is scored by the share of ``samples`` fresh solutions of its problem, sampled
from the policy at ``temperature``, that reach the same answer (by the task's own check, so ``7`` and
``7.0`` agree). Partial solutions get None, as from an ORM. No gold answer and no verifier enter the
score, so it is a test-time critic; it is self-consistency (Wang et al. 2023) turned from a read-out
into a score, the way weighted voting and rStar's mutual consistency use it.

Why an outcome critic needs it: the learned ORM reads one solution, and a policy's confident slips
look right to a model of its own size (benchmarks/README.md, "Made negatives for the arith ORM").
A slip is rarely repeated the same way across independent samples, while the right answer recurs.

Only for tasks whose verifier judges a solution by its answer (``Task.checks_answers``): on game24
every right solution reaches 24 its own way, and agreement would be the verifier's verdict itself.

The samples of a problem are drawn once and kept; their tokens are counted in ``usage`` (a search
reports them as ``critic:consistency``), so that comparisons at equal compute include them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from alphallm.critics.base import CriticInput
from alphallm.errors import UserError
from alphallm.evaluation import finish_solution
from alphallm.lm.base import LanguageModel, Metered, Usage
from alphallm.tasks.base import Problem, Task

__all__ = ["ConsistencyCritic"]


class ConsistencyCritic:
    """Scores a complete solution by the share of the policy's samples that reach its answer.

    Args:
        lm: the model whose samples vote (the policy).
        samples: solutions sampled per problem (8 at 0.7 reads 0.90 ORM AUC on arith's held-out trees).
        temperature: their sampling temperature.
        seed: seed of the samples; each call's seed also depends on the problems it samples (and on
            nothing before it), so that a shard of a search samples as the whole search did.
        max_tokens: tokens a sample may generate (None: the task's limit).
    """

    name = "consistency"

    def __init__(
        self,
        task: Task,
        lm: LanguageModel,
        *,
        samples: int = 8,
        temperature: float = 0.7,
        seed: int = 0,
        max_tokens: int | None = None,
    ) -> None:
        if samples < 1:
            raise ValueError(f"the consistency critic needs at least 1 sample, not {samples}")
        if temperature <= 0:
            raise ValueError(f"the consistency critic's temperature must be above 0, not {temperature}")
        self.task, self.samples, self.temperature = task, samples, temperature
        self.max_tokens = task.token_limit(max_tokens)
        self.lm = Metered(lm)
        self.seed = seed
        self._solutions: dict[str, list[str]] = {}  # by prompt: the problem's samples

    @property
    def usage(self) -> Usage:
        return self.lm.usage

    def score(self, items: Sequence[CriticInput]) -> list[float | None]:
        self._sample([item.problem for item in items if item.terminal])
        out: list[float | None] = []
        for item in items:
            if not item.terminal:
                out.append(None)
                continue
            answer = self.task.extract_answer(item.solution)
            if answer is None:  # a complete solution that states no answer agrees with nothing
                out.append(0.0)
                continue
            votes = self.task.votes_for(item.problem, answer, self._solutions[self._key(item.problem)])
            out.append(votes / self.samples)
        return out

    def check_task(self, problem: Problem) -> None:
        """Refuses a task whose verifier does not judge solutions by their answer (game24)."""
        if not self.task.checks_answers(problem):
            raise UserError(
                f"the consistency critic compares answers, and {self.task.name}'s verifier does not: "
                "any right solution will do (use the tool, value, prm or orm critics)"
            )

    def _call_seed(self, keys: list[str]) -> int:
        digest = hashlib.sha256("\0".join([str(self.seed), *keys]).encode()).digest()
        return int.from_bytes(digest[:4], "little")

    def _key(self, problem: Problem) -> str:
        return self.task.format_prompt(problem)

    def _sample(self, problems: Sequence[Problem]) -> None:
        """Draws the samples of every problem not seen before, in one call."""
        todo: dict[str, Problem] = {}
        for problem in problems:
            key = self._key(problem)
            if key not in self._solutions and key not in todo:
                self.check_task(problem)
                todo[key] = problem
        if not todo:
            return
        completions = self.lm.sample(
            list(todo),
            n=self.samples,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            seed=self._call_seed(list(todo)),
        )
        for key, row in zip(todo, completions):
            self._solutions[key] = [finish_solution(self.task, c) for c in row]
