"""The policy side of the search: ``ExpandRequest``s become batched option sampling calls."""

from __future__ import annotations

from collections.abc import Sequence

from alphallm.lm.base import Completion, LanguageModel
from alphallm.search.types import ExpandFn, ExpandRequest, Option
from alphallm.tasks.base import Task

__all__ = ["make_expand_fn", "to_option"]


def to_option(task: Task, completion: Completion, depth: int) -> Option:
    """An option from a sampled line. It is terminal when it is an answer line, when the model ended
    the text (EOS) or ran past the option length, or when the solution reaches the step limit."""
    text = completion.text
    if completion.finish_reason != "stop" and not text.endswith("\n"):
        text += "\n"  # an option is a whole line, even when the model stopped mid-line
    line = text.rstrip("\n")
    terminal = task.is_answer_line(line) or completion.finish_reason != "stop" or depth + 1 >= task.max_steps
    return Option(
        text=text,
        num_tokens=completion.num_tokens,
        logprob=float(sum(completion.logprobs)),
        terminal=terminal,
    )


def make_expand_fn(
    task: Task, lm: LanguageModel, *, temperature: float = 0.8, top_p: float = 1.0
) -> ExpandFn:
    """Samples ``n`` options per request, greedy requests in one call and sampled ones in another."""

    def expand(requests: Sequence[ExpandRequest]) -> list[list[Option]]:
        out: list[list[Option]] = [[] for _ in requests]
        for greedy in (True, False):
            chosen = [i for i, r in enumerate(requests) if r.greedy == greedy]
            if not chosen:
                continue
            results = lm.sample(
                [requests[i].state for i in chosen],
                n=[requests[i].n for i in chosen],
                temperature=0.0 if greedy else temperature,
                top_p=top_p,
                stop=task.stop,
                max_tokens=task.max_option_tokens,
                seed=requests[chosen[0]].seed,
            )
            for i, completions in zip(chosen, results):
                out[i] = [to_option(task, c, requests[i].depth) for c in completions]
        return out

    return expand
