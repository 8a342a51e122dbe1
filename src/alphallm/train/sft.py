"""Supervised fine-tuning of the policy on verified solutions (a lean loop: CPU-friendly, seeded).

Loss on completion tokens only, EOS appended (every row is a complete solution), linear warm-up
then linear decay (AlphaLLM §4.5), early stopping on a held-out loss. With ``lora_r > 0`` only LoRA
adapters are trained and then merged into the model (``train/lora.py``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from alphallm.lm.hf import fitting_length
from alphallm.train.checkpoint import Checkpoint, Resume
from alphallm.train.common import encode_pairs, frozen_heap, sequence_logprobs
from alphallm.train.lora import (
    add_lora,
    merge_lora,
    refuse_float16_training,
    restore_trainable,
    snapshot_trainable,
    trainable_parameters,
)

__all__ = ["SFTConfig", "sft", "split_held_out"]


@dataclass(frozen=True)
class SFTConfig:
    """Policy SFT settings."""

    epochs: int = field(default=3, metadata={"help": "passes over the rows (early stopping may keep fewer)"})
    lr: float = field(default=3e-4, metadata={"help": "peak learning rate (AdamW)"})
    batch_size: int = field(default=32, metadata={"help": "rows per step"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "fraction of steps of linear warm-up"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    holdout: float = field(default=0.1, metadata={"help": "fraction of rows held out for early stopping"})
    max_length: int = field(default=512, metadata={"help": "longest prompt + completion in tokens"})
    seed: int = field(default=0, metadata={"help": "shuffling seed"})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank (0: full fine-tuning)"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scale alpha (the update is alpha/r * BA)"})
    checkpoint_every: int = field(
        default=200, metadata={"help": "steps between checkpoints within an epoch (one follows every epoch)"}
    )

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.checkpoint_every < 1:
            raise ValueError("epochs, batch_size, lr and checkpoint_every must be positive")
        if not 0.0 <= self.holdout < 1.0 or not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError("holdout and warmup_ratio must lie in [0, 1)")
        if self.lora_r < 0 or self.lora_alpha <= 0:
            raise ValueError("lora_r must be non-negative and lora_alpha positive")
        if self.weight_decay < 0 or self.max_length < 1:
            raise ValueError("weight_decay must be non-negative and max_length at least 1")


def held_out_count(n_rows: int, config: SFTConfig) -> int:
    """Rows ``sft`` holds out for early stopping: ``holdout`` of them, none below 20 rows."""
    return math.floor(n_rows * config.holdout) if n_rows >= 20 else 0


def split_held_out(
    rows: Sequence[tuple[str, str]], config: SFTConfig, rng: random.Random
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(held-out rows, training rows): ``held_out_count`` of the rows, shuffled by ``rng``, held out."""
    shuffled = list(rows)
    rng.shuffle(shuffled)
    held = shuffled[: held_out_count(len(shuffled), config)]
    return held, shuffled[len(held) :]


def training_steps(n_rows: int, config: SFTConfig) -> int:
    """Optimizer steps ``sft`` takes on ``n_rows`` rows (its schedule's and a progress bar's length):
    the rows left after the held-out share, in batches, once per epoch."""
    return config.epochs * math.ceil((n_rows - held_out_count(n_rows, config)) / config.batch_size)


def _mean_nll(model: Any, tokenizer: Any, rows: Sequence[tuple[str, str]], config: SFTConfig) -> torch.Tensor:
    device = next(model.parameters()).device
    batch = encode_pairs(
        tokenizer,
        [p for p, _ in rows],
        [c for _, c in rows],
        max_length=fitting_length(model, config.max_length),
        device=device,
    )
    logp, count = sequence_logprobs(model, batch)
    return -logp.sum() / count.sum().clamp(min=1)


@torch.no_grad()
def _held_out(model: Any, tokenizer: Any, rows: Sequence[tuple[str, str]], config: SFTConfig) -> float:
    model.eval()
    losses = [_mean_nll(model, tokenizer, rows[i : i + 64], config).item() for i in range(0, len(rows), 64)]
    return sum(losses) / max(1, len(losses))


@frozen_heap
def sft(
    model: Any,
    tokenizer: Any,
    rows: Sequence[tuple[str, str]],
    *,
    config: SFTConfig,
    on_step: Callable[[int, float], None] | None = None,
    adapter_dir: str | Path | None = None,
    checkpoint: Checkpoint | None = None,
) -> dict[str, Any]:
    """Trains ``model`` in place on (prompt, completion) rows; returns metrics. The weights of the
    epoch with the lowest held-out loss are kept.

    With ``config.lora_r > 0`` the adapters are merged into ``model`` at the end, so it stays a
    plain model; ``adapter_dir`` also saves them first (PEFT format, reloadable on the base).
    With ``checkpoint`` (``training_checkpoint``) the training is saved after every epoch and every
    ``checkpoint_every`` steps, and a run of the same work resumes there, to the same weights.
    """
    if not rows:
        raise ValueError("no SFT rows")
    if config.lora_r:
        model = add_lora(model, r=config.lora_r, alpha=config.lora_alpha)
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    held, train = split_held_out(rows, config, rng)
    total = training_steps(len(rows), config)
    warmup = max(1, int(total * config.warmup_ratio))
    params = trainable_parameters(model)
    refuse_float16_training(params)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / warmup if s < warmup else max(0.0, (total - s) / max(1, total - warmup)),
    )

    def fresh() -> dict[str, Any]:  # the starting weights' held-out loss: a resumed run has it saved
        if not held:
            return {"best": (math.inf, None), "history": []}
        loss = _held_out(model, tokenizer, held, config)
        return {"best": (loss, snapshot_trainable(model)), "history": [{"epoch": -1, "held_out_loss": loss}]}

    resume = Resume(checkpoint, every=config.checkpoint_every, kept=fresh)
    resume.start(model, optimizer, rng, schedule)
    order = sorted(train, key=lambda r: len(r[0]) + len(r[1]))  # similar lengths: less padding
    for epoch in resume.epochs(config.epochs):
        model.train()
        batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        rng.shuffle(batches)
        for batch in resume.batches(batches):
            loss = _mean_nll(model, tokenizer, batch, config)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            if on_step is not None:
                on_step(resume.step, loss.item())
        if held:
            loss_now = _held_out(model, tokenizer, held, config)
            resume.kept["history"].append({"epoch": epoch, "held_out_loss": loss_now})
            if loss_now < resume.kept["best"][0]:
                resume.kept["best"] = (loss_now, snapshot_trainable(model))
    best_loss, best_state = resume.kept["best"]
    if best_state is not None:
        restore_trainable(model, best_state)
    model.eval()
    if config.lora_r:
        if adapter_dir is not None:
            model.save_pretrained(str(adapter_dir))
        merge_lora(model)
    return {
        "rows": len(rows),
        "train_rows": len(train),
        "steps": resume.step,
        "trainable_parameters": sum(p.numel() for p in params),
        "held_out_loss": best_loss if math.isfinite(best_loss) else None,
        "history": resume.kept["history"],
        "seconds": round(resume.seconds(), 1),
        **({"resumed_at_step": resume.resumed_at} if resume.resumed_at is not None else {}),
        "config": asdict(config),
    }
