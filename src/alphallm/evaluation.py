"""Decoding whole solutions and scoring them: accuracy, pass@k, majority@k, legal-step rate, compute.

Used by ``alphallm eval``, by the pretraining recipe (to write measured accuracies into the model
card) and by the loop's per-round evaluation.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alphallm.chunks import Chunk, ChunkStore
from alphallm.errors import UserError
from alphallm.lm.base import Completion, LanguageModel, Usage
from alphallm.tasks.base import Problem, Task

__all__ = ["EvalResult", "SampleRecord", "check_prompts_fit", "eval_store", "evaluate", "finish_solution"]


@dataclass
class SampleRecord:
    """One decoded solution and what the verifiers said about it."""

    problem_id: str
    solution: str
    answer: str | None
    correct: bool | None
    legal_steps: int
    checked_steps: int
    tokens: int


@dataclass
class EvalResult:
    """Aggregate metrics over a problem set (``records`` holds every decoded solution)."""

    task: str
    method: str
    n: int
    problems: int
    metrics: dict[str, float]
    usage: dict[str, int]
    wall_seconds: float
    records: list[SampleRecord] = field(default_factory=list)

    def to_dict(self, *, with_records: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": self.task,
            "method": self.method,
            "n": self.n,
            "problems": self.problems,
            "metrics": self.metrics,
            "usage": self.usage,
            "wall_seconds": round(self.wall_seconds, 3),
        }
        if with_records:
            out["records"] = [vars(r) for r in self.records]
        return out


def finish_solution(task: Task, completion: Completion) -> str:
    """The solution a verifier reads: cut after the first answer line. A text the model ended with
    EOS counts its last line as complete."""
    text = completion.text
    if completion.finish_reason == "eos" and not text.endswith("\n"):
        text += "\n"
    return task.truncate(text)


def _record(task: Task, problem: Problem, completion: Completion) -> SampleRecord:
    solution = finish_solution(task, completion)
    legal = checked = 0
    prefix = ""
    for step in task.steps(solution):
        verdict = task.check_step(problem, prefix, step)
        # A retry line abandons an attempt: the verifier accepts it, but it is no step to count.
        if verdict is not None and step.strip() != task.retry_line:
            checked += 1
            legal += int(verdict)
        prefix += step + "\n"
    return SampleRecord(
        problem_id=problem.id,
        solution=solution,
        answer=task.extract_answer(solution),
        correct=task.check(problem, solution),
        legal_steps=legal,
        checked_steps=checked,
        tokens=completion.num_tokens,
    )


def _majority_correct(task: Task, problem: Problem, records: Sequence[SampleRecord]) -> bool:
    """Self-consistency: the most frequent answer (first seen wins ties) decides."""
    answers = [r.answer for r in records if r.answer is not None]
    if not answers:
        return False
    top = Counter(answers).most_common(1)[0][0]
    return any(r.correct for r in records if r.answer == top)


def check_prompts_fit(task: Task, problems: Sequence[Problem], policy: LanguageModel) -> None:
    """A problem whose prompt fills the model's positions is refused by name before any is searched;
    otherwise the batch it falls in stops the run with "a text of N tokens does not fit", naming none.
    (Models that do not say their positions or tokens, such as a served one, are left to the server.)"""
    limit, encode = getattr(policy, "max_positions", None), getattr(policy, "encode", None)
    if not limit or encode is None:
        return
    for problem in problems:
        tokens = len(encode(task.format_prompt(problem)))
        if tokens >= limit:
            raise UserError(
                f"problem {problem.id!r}: its prompt is {tokens} tokens, and the model has {limit} positions "
                "(max_position_embeddings): none are left for a solution"
            )


def evaluate(
    task: Task,
    lm: LanguageModel,
    problems: Sequence[Problem],
    *,
    method: str = "greedy",
    n: int = 1,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    max_tokens: int | None = None,
    progress: Callable[[int], None] | None = None,
    store: ChunkStore | None = None,
) -> EvalResult:
    """Decodes ``n`` whole solutions per problem (one if greedy), each up to ``max_tokens`` (default:
    the task's ``max_solution_tokens``), and scores them.

    Returns accuracy (mean over samples), and for sampling pass@n and majority@n; the legal-step
    rate when the task has a step verifier; tokens used and wall time.

    With ``store`` (made for this work: model, settings), each finished batch is saved there and one
    saved before is taken back, so that a killed evaluation resumes; each batch is seeded by its
    position, so a resumed run decodes what an uninterrupted one would.
    """
    if method not in ("greedy", "sample"):
        raise ValueError(f"unknown method {method!r}; expected 'greedy' or 'sample'")
    n = 1 if method == "greedy" else n
    check_prompts_fit(task, problems, lm)
    start_time = time.perf_counter()
    per_problem: list[list[SampleRecord]] = []
    usage: Counter[str] = Counter()
    for index, start in enumerate(range(0, len(problems), batch_size)):
        shard = problems[start : start + batch_size]
        place = Chunk(index, start, start + len(shard))
        batch = store.load(place, shard) if store is not None else None
        if batch is None:
            before = lm.usage.copy()
            completions = lm.sample(
                [task.format_prompt(p) for p in shard],
                n=n,
                temperature=0.0 if method == "greedy" else temperature,
                max_tokens=task.token_limit(max_tokens),
                seed=seed + start,
            )
            rows = [
                [vars(_record(task, problem, c)) for c in row] for problem, row in zip(shard, completions)
            ]
            batch = {"records": rows, "usage": lm.usage.since(before).to_dict()}
            if store is not None:
                store.save(place, shard, batch)
        per_problem.extend([SampleRecord(**record) for record in row] for row in batch["records"])
        usage.update(batch["usage"])
        if progress is not None:
            progress(len(shard))
    records = [r for rows in per_problem for r in rows]
    metrics = _metrics(task, problems, per_problem, records, n)
    return EvalResult(
        task=task.name,
        method=method,
        n=n,
        problems=len(problems),
        metrics=metrics,
        usage={key: usage[key] for key in Usage().to_dict()},
        wall_seconds=time.perf_counter() - start_time,
        records=records,
    )


def eval_store(
    directory: str | Path,
    task: Task,
    problems: Sequence[Problem],
    model: str,
    *,
    device: str | None = None,
    **settings: Any,
) -> ChunkStore:
    """Where ``evaluate``'s finished batches stream (its ``store``), taken back only for the same work:
    the model's files (one retrained in place is decoded again), the device (a GPU's numbers are not a
    CPU's), the prompts (a chat template changes them) and ``settings`` (``evaluate``'s, and the dtype)."""
    from alphallm.lm.loading import model_files, pick_device

    work = {"task": task.name, "model": model, "files": model_files(model), **settings}
    work["device"] = pick_device(device).type
    work["prompt"] = task.format_prompt(problems[0]) if problems else None
    return ChunkStore(directory, work)


def _metrics(
    task: Task,
    problems: Sequence[Problem],
    per_problem: list[list[SampleRecord]],
    records: list[SampleRecord],
    n: int,
) -> dict[str, float]:
    count = max(1, len(records))
    metrics = {
        "accuracy": sum(bool(r.correct) for r in records) / count,
        "answer_rate": sum(r.answer is not None for r in records) / count,
        "mean_tokens": sum(r.tokens for r in records) / count,
    }
    if n > 1:
        metrics[f"pass@{n}"] = sum(any(r.correct for r in rows) for rows in per_problem) / max(
            1, len(per_problem)
        )
        metrics[f"maj@{n}"] = sum(
            _majority_correct(task, p, rows) for p, rows in zip(problems, per_problem)
        ) / max(1, len(per_problem))
    checked = sum(r.checked_steps for r in records)
    if checked:
        metrics["legal_step_rate"] = sum(r.legal_steps for r in records) / checked
    return metrics
