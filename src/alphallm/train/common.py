"""What the trainers share: encoding (prompt, completion) pairs and summing completion log-probs (SFT and
DPO), and keeping Python's garbage collector off the objects a run made before training (all of them)."""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from alphallm.lm.hf import encode_pair, pad_id, token_logprobs

__all__ = ["PairBatch", "encode_pairs", "frozen_heap", "sequence_logprobs"]

F = TypeVar("F", bound=Callable[..., Any])


def frozen_heap(train: F) -> F:
    """``train`` with the objects alive when it starts left out of garbage collection until it returns.

    A loop's trainers run in a process that has just searched, and its trees and caches are hundreds of
    thousands of objects; every full collection during training walks them all again. After the demo's
    999-puzzle search its SFT took 80 s, 69 s with them frozen, 67 s in a fresh process. Objects freed
    meanwhile by their reference counts still go at once; cycles among the frozen wait for the unfreeze."""

    @functools.wraps(train)
    def trained(*args: Any, **kwargs: Any) -> Any:
        gc.collect()
        gc.freeze()
        try:
            return train(*args, **kwargs)
        finally:
            gc.unfreeze()

    return trained  # type: ignore[return-value]


@dataclass
class PairBatch:
    """Right-padded token ids of prompt + completion. Shapes: (B, T)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor  # 1 on completion tokens (the ones that are learned)


def encode_pairs(
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    *,
    add_eos: bool | Sequence[bool] = True,
    max_length: int = 1024,
    device: torch.device | None = None,
) -> PairBatch:
    """Prompt and completion are tokenised as the backend reads them (``encode_pair``); EOS ends a
    completion only when ``add_eos`` (one flag, or one per row) — right for complete solutions,
    wrong for a single step — and the tokenizer has one."""
    eos = [add_eos] * len(prompts) if isinstance(add_eos, bool) else list(add_eos)
    rows = []
    for prompt, completion, with_eos in zip(prompts, completions, eos):
        prompt_ids, completion_ids = encode_pair(tokenizer, prompt, completion)
        if with_eos and tokenizer.eos_token_id is not None:
            completion_ids.append(tokenizer.eos_token_id)
        ids = (prompt_ids + completion_ids)[:max_length]
        rows.append((ids, min(len(prompt_ids), len(ids))))
    width = max(len(ids) for ids, _ in rows)
    pad = pad_id(tokenizer)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    learned = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[row, : len(ids)] = 1
        learned[row, prompt_len : len(ids)] = 1
    target = device if device is not None else torch.device("cpu")
    return PairBatch(input_ids.to(target), attention.to(target), learned.to(target))


def sequence_logprobs(model: Any, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log pi over each row's completion tokens, and their count. Shapes: (B,), (B,)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    token_logp = token_logprobs(logits, batch.input_ids)  # (B, T-1)
    mask = batch.completion_mask[:, 1:].float()
    return (token_logp * mask).sum(-1), mask.sum(-1)
