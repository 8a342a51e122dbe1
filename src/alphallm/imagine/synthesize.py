"""New problems for a round of self-improvement.

The policy is a language model over whole documents (problem + solution), so sampling it from the
task's problem prefix ("Q: ", "Input: ") writes new problems. Each one is parsed by the task and
kept only if it is valid, has a solution where the task can tell, is new (not in the pool of
problems already used, not a duplicate in this batch) and belongs to the train split: test and dev
items can never enter training, whoever wrote them. A task generator, or the user's file of
training problems for a task without one, fills the rest of the batch.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from alphallm.lm.base import LanguageModel
from alphallm.tasks.base import Problem, Task

__all__ = ["ImagineStats", "imagine_problems", "mix_problems"]


@dataclass
class ImagineStats:
    """Why sampled problems were kept or dropped."""

    sampled: int = 0
    kept: int = 0
    invalid: int = 0
    unsolvable: int = 0
    not_train: int = 0
    duplicate: int = 0
    surplus: int = 0  # valid and new, but sampled after the batch was full

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def imagine_problems(
    task: Task,
    lm: LanguageModel,
    n: int,
    *,
    pool: Iterable[str] = (),
    temperature: float = 1.0,
    seed: int = 0,
    max_rounds: int = 8,
    examples: Sequence[Problem] = (),
    shots: int = 0,
) -> tuple[list[Problem], ImagineStats]:
    """Up to ``n`` new train-split problems sampled from the policy (batched, a few rounds at most),
    each prompt showing ``shots`` problems drawn from ``examples`` first (``Task.imagine_prompt``);
    a copy of an example is no new problem."""
    stats = ImagineStats()
    seen = set(pool) | {p.question for p in examples}
    out: list[Problem] = []
    rng = random.Random(seed)
    shots = min(shots, len(examples))
    for round_ in range(max_rounds):
        if len(out) >= n:
            break
        want = max(8, 2 * (n - len(out)))
        completions = lm.sample(
            [task.imagine_prompt(rng.sample(list(examples), shots) if shots else ()) for _ in range(want)],
            temperature=temperature,
            stop=("\n",),
            max_tokens=task.max_option_tokens * 2,
            seed=seed + round_,
        )
        for (completion,) in completions:
            stats.sampled += 1
            problem = (
                task.parse_question(completion.text.rstrip("\n"))
                if completion.finish_reason == "stop"
                else None
            )
            if problem is None:
                stats.invalid += 1
            elif task.split_of(problem.question) != "train":
                stats.not_train += 1
            elif problem.question in seen:
                stats.duplicate += 1
            elif task.solvable(problem) is False:
                stats.unsolvable += 1
            elif len(out) < n:
                seen.add(problem.question)
                out.append(problem)
                stats.kept += 1
            else:
                stats.surplus += 1
    return out, stats


def mix_problems(
    task: Task,
    lm: LanguageModel,
    n: int,
    *,
    imagined_fraction: float,
    pool: Iterable[str] = (),
    difficulty: dict[str, Any] | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    source: Sequence[Problem] | None = None,
    shots: int = 0,
) -> tuple[list[Problem], dict[str, Any]]:
    """``n`` problems: a fraction imagined by the policy, the rest (and any shortfall) from the
    task's generator, or drawn from ``source`` in a seeded order when given (fewer when it runs
    out); every one novel against ``pool`` and in the train split. With ``shots``, each imagination
    prompt shows that many problems from ``source`` (or the generator) first."""
    pool = set(pool)
    examples: list[Problem] = []
    if shots:
        candidates = (
            source if source is not None else task.generate(random.Random(seed + 1), 64 * shots, difficulty)
        )
        # Never a dev or test item, nor one already used, even as an example.
        examples = [p for p in candidates if p.question not in pool and task.split_of(p.question) == "train"]
    imagined, stats = imagine_problems(
        task,
        lm,
        round(n * imagined_fraction),
        pool=pool,
        temperature=temperature,
        seed=seed,
        examples=examples,
        shots=shots,
    )
    taken = pool | {p.question for p in imagined}
    rng = random.Random(seed)
    rest = n - len(imagined)
    if source is not None:
        order = list(source)
        rng.shuffle(order)
        drawn = _novel(task, order, rest, taken)
        return imagined + drawn, {"imagined": stats.to_dict(), "from_file": len(drawn)}
    generated: list[Problem] = []
    attempts = 0
    while len(generated) < rest and attempts < 50:
        attempts += 1
        want = rest - len(generated)
        generated += _novel(task, task.generate(rng, want, difficulty), want, taken)
    return imagined + generated, {"imagined": stats.to_dict(), "generated": len(generated)}


def _novel(task: Task, problems: Sequence[Problem], n: int, taken: set[str]) -> list[Problem]:
    """The first ``n`` of ``problems`` that are train items and not ``taken`` (they join it)."""
    out: list[Problem] = []
    for problem in problems:
        if len(out) >= n:
            break
        if problem.question not in taken and task.split_of(problem.question) == "train":
            taken.add(problem.question)
            out.append(problem)
    return out
