"""Retry traces (Stream of Search, Gandhi et al. 2024): SFT rows in which the policy abandons failed
attempts and starts again, so that one greedy decoding can recover from a first move that dooms it.

    Input: 2 5 8 11
    8*2=16 (left: 5 11 16)
    11-5=6 (left: 6 16)
    back
    11-5=6 (left: 2 6 8)
    ...

A failed attempt is the policy's own: its first ``steps`` sampled steps, each legal, after which the
task's reachability tool says the problem cannot be solved any more. A row keeps its verified solution
and gets 0, 1, 2, ... such attempts before it (``mix`` gives the shares), each followed by the task's
retry line; an attempt that starts like the solution is never used, so the retry is a different try.
On game24 it takes greedy 0.33 -> 0.49 -> 0.57 in the loop's rounds 7-8 (``learn.retry_mix``), and
0.47-0.58 as one fine-tune outside it (benchmarks/retry_traces.py; benchmarks/README.md).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from alphallm.critics.base import CriticInput
from alphallm.critics.tool import step_verdicts
from alphallm.tasks.base import Task

__all__ = ["failed_attempts", "retry_rows", "retry_traces"]


def failed_attempts(
    task: Task,
    lm: Any,
    prompts: Sequence[str],
    *,
    samples: int,
    steps: int = 2,
    seed: int = 0,
    batch_size: int = 100,
    progress: Callable[[int], None] | None = None,
) -> dict[str, list[str]]:
    """Per prompt: the policy's distinct failed attempts (by first step), from ``samples`` solutions
    sampled at temperature 1 and cut after ``steps`` steps."""
    out: dict[str, list[str]] = {}
    for start in range(0, len(prompts), batch_size):
        batch = list(prompts[start : start + batch_size])
        completions = lm.sample(
            batch, n=samples, temperature=1.0, max_tokens=task.max_option_tokens * steps, seed=seed + start
        )
        for prompt, sampled in zip(batch, completions):
            problem = task.problem_from_prompt(prompt)
            fails = out.setdefault(prompt, [])
            if problem is None:
                continue
            firsts: set[str] = set()
            for completion in sampled:
                lines = [line + "\n" for line in completion.text.split("\n") if line.strip()][:steps]
                if len(lines) < steps or lines[0] in firsts or _failed(task, problem, lines) is not True:
                    continue
                firsts.add(lines[0])
                fails.append("".join(lines))
        if progress is not None:
            progress(len(batch))
    return out


def _failed(task: Task, problem: Any, lines: list[str]) -> bool:
    """Every step is a legal move (no answer line, no retry) and the problem is unsolvable after them."""
    if any(task.is_answer_line(line) or line.strip() == task.retry_line for line in lines):
        return False
    attempt = "".join(lines)
    legal = step_verdicts(task, CriticInput(problem, attempt, terminal=False))
    return all(verdict is True for verdict in legal) and task.solvable_after(problem, attempt) is False


def retry_rows(
    rows: Sequence[tuple[str, str]],
    fails: dict[str, list[str]],
    *,
    mix: Sequence[float],
    retry_line: str,
    seed: int,
) -> list[tuple[str, str]]:
    """Each (prompt, solution) row with ``k`` failed attempts of its prompt before the solution, ``k``
    drawn with weights ``mix`` (fewer when the prompt has fewer attempts that start unlike it)."""
    rng = random.Random(seed)
    out = []
    for prompt, solution in rows:
        k = rng.choices(range(len(mix)), weights=mix)[0]
        first = solution.split("\n", 1)[0] + "\n"
        usable = [attempt for attempt in fails.get(prompt, []) if not attempt.startswith(first)]
        tried = rng.sample(usable, min(k, len(usable)))
        out.append((prompt, "".join(attempt + retry_line + "\n" for attempt in tried) + solution))
    return out


def retry_traces(
    task: Task,
    lm: Any,
    rows: Sequence[tuple[str, str]],
    *,
    mix: Sequence[float],
    samples: int,
    steps: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """The rows as retry traces with the policy ``lm``'s own failed attempts, and a record of what went
    into them (the loop's SFT stage writes it to ``sft.json``)."""
    if task.retry_line is None:
        raise ValueError(f"task {task.name!r} has no retry line in its format")
    prompts = list(dict.fromkeys(prompt for prompt, _ in rows))
    fails = failed_attempts(task, lm, prompts, samples=samples, steps=steps, seed=seed, progress=progress)
    traces = retry_rows(rows, fails, mix=mix, retry_line=task.retry_line, seed=seed)
    retried = [trace for trace, row in zip(traces, rows) if trace != row]
    return traces, {
        "prompts": len(prompts),
        "failed_attempts": sum(map(len, fails.values())),
        "rows_with_a_retry": len(retried),
        "examples": retried[:3],
    }
