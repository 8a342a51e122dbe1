"""Answers for imagined problems that come without one: the policy's own agreement.

An imagined gsm8k or math question has no gold answer, so the verifier can judge none of its
solutions: searching it spends compute and yields no training rows and no critic labels. Before the
search, the policy samples a few whole solutions of each such problem; if enough of them reach the
same answer, that answer becomes the problem's, and the search, the training rows and the critics'
labels are verified against it as against a gold one. A problem without such agreement is dropped
(self-consistency pseudo-labels: Huang et al. 2022, "Large Language Models Can Self-Improve").

A confident policy can agree on a wrong answer, and then trains on it; the agreement asked for is
the guard (``benchmarks/pseudo_labels.py`` measures how often the agreed answer is right, and how
many problems keep one, at each setting). Votes are counted with the task's own ``check``, so
answers the task deems equal (``1/2`` and ``0.5`` on math) vote together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from alphallm.lm.base import LanguageModel
from alphallm.tasks.base import Problem, Task

__all__ = ["AnswerStats", "agreed_answer", "answer_by_agreement", "unanswerable"]

CANDIDATES = 4  # the most frequent answer strings tried as the agreed one (each checked against all)


@dataclass
class AnswerStats:
    """What happened to the problems the verifier could not judge."""

    unanswered: int = 0
    agreed: int = 0  # kept, with the answer their samples agreed on
    dropped: int = 0  # no answer reached by enough samples

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def unanswerable(task: Task, problem: Problem) -> bool:
    """The verifier can judge no solution of ``problem`` (it has no answer to check against)."""
    return task.check(problem, "") is None


def agreed_answer(task: Task, problem: Problem, solutions: Sequence[str], *, agreement: float) -> str | None:
    """The answer at least ``agreement`` of ``solutions`` reach (a share of them all, so that
    solutions stating no answer count against it), or None. A solution states its answer on an answer
    line (``Task.is_terminal``): gsm8k's reading of a last number alone would let text that only ends in
    a number vote, as the loop would not let it be taught (train/data.py)."""
    stated = [
        (text, answer)
        for text in solutions
        if task.is_terminal(text) and (answer := task.extract_answer(text)) is not None
    ]
    best, votes = None, 0
    texts = [text for text, _ in stated]
    for candidate, _ in Counter(answer for _, answer in stated).most_common(CANDIDATES):
        count = task.votes_for(problem, candidate, texts)
        if count > votes:
            best, votes = candidate, count
    return best if solutions and votes >= agreement * len(solutions) else None


def answer_by_agreement(
    task: Task,
    lm: LanguageModel,
    problems: Sequence[Problem],
    *,
    samples: int,
    agreement: float,
    temperature: float,
    seed: int = 0,
    max_tokens: int | None = None,
) -> tuple[list[Problem], AnswerStats]:
    """``problems`` in order, each one the verifier cannot judge given the answer ``samples`` of
    the policy's solutions (at ``temperature``) agree on, or dropped; the others unchanged."""
    from alphallm.evaluation import evaluate

    stats = AnswerStats()
    # Position in ``problems`` of each one the verifier cannot judge (ids need not be unique in a file).
    open_at = [i for i, p in enumerate(problems) if unanswerable(task, p)]
    stats.unanswered = len(open_at)
    kept = list(problems)
    if not open_at:
        return kept, stats
    result = evaluate(
        task,
        lm,
        [problems[i] for i in open_at],
        method="sample",
        n=samples,
        temperature=temperature,
        seed=seed,
        max_tokens=max_tokens,
    )
    dropped = set()
    for k, i in enumerate(open_at):
        texts = [r.solution for r in result.records[k * samples : (k + 1) * samples]]
        answer = agreed_answer(task, problems[i], texts, agreement=agreement)
        if answer is None:
            dropped.add(i)
        else:
            kept[i] = replace(problems[i], answer=answer)
    stats.dropped = len(dropped)
    stats.agreed = stats.unanswered - stats.dropped
    kept = [p for i, p in enumerate(kept) if i not in dropped]
    return kept, stats
