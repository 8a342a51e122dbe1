"""Training a value / PRM / ORM critic on labels from search trees.

Soft targets stay soft (0.875 is 0.875: TRL's PRMTrainer truncated them to ints), the loss is a
weighted binary cross-entropy on the head's logit, problems are held out as whole groups, and the
epoch with the lowest held-out loss is kept. With ``lora_r > 0`` the backbone gets LoRA adapters
(kept unmerged: see ``critics/learned.py``) and the head is trained in full.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from alphallm.critics.learned import CriticModel
from alphallm.critics.metrics import (
    auc,
    auc_within,
    brier,
    expected_calibration_error,
    spearman,
    spearman_ceiling,
)
from alphallm.errors import UserError
from alphallm.tasks.base import Task
from alphallm.train.checkpoint import Checkpoint, Resume, training_checkpoint
from alphallm.train.common import frozen_heap
from alphallm.train.critic_data import Features, Texts
from alphallm.train.labels import LabelRow, corrupted_rows
from alphallm.train.lora import (
    add_lora,
    refuse_float16_training,
    restore_trainable,
    snapshot_trainable,
    trainable_parameters,
)

__all__ = [
    "CriticTrainConfig",
    "cap_by_group",
    "critic_checkpoint",
    "critic_metrics",
    "split_by_group",
    "task_corrupter",
    "train_critic",
    "trained_groups",
    "training_steps",
]


@dataclass(frozen=True)
class CriticTrainConfig:
    """Critic training settings."""

    epochs: int = field(default=3, metadata={"help": "passes over the training rows"})
    lr: float = field(default=3e-4, metadata={"help": "AdamW learning rate (backbone and head)"})
    batch_size: int = field(default=32, metadata={"help": "rows per step"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    holdout: float = field(default=0.2, metadata={"help": "fraction of problems held out for early stopping"})
    max_rows: int | None = field(default=None, metadata={"help": "sample at most this many training rows"})
    max_held_out_rows: int | None = field(
        default=5000,
        metadata={
            "help": "score at most this many held-out rows, whole problems in a seeded order (None: all). "
            "Early stopping, the held-out metrics and the loop's critic gate read them, so without a cap "
            "their cost grows with every round's trees while max_rows holds training still"
        },
    )
    seed: int = field(default=0, metadata={"help": "shuffling and initialisation seed"})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank of the backbone (0: full fine-tuning)"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scale alpha (the update is alpha/r * BA)"})
    confidence: bool = field(
        default=False,
        metadata={
            "help": "also feed the head the base model's own token log-probs of the solution (min, mean, "
            "sum, slips); the backbone then stays frozen, or with LoRA the features come from the "
            "adapter-free base"
        },
    )
    token_evidence: bool = field(
        default=False,
        metadata={
            "help": "with confidence: a second head scores every solution token (its hidden state and "
            "how the base rated it) and the worst tokens lower the critic's logit"
        },
    )
    checkpoint_every: int = field(
        default=200, metadata={"help": "steps between checkpoints within an epoch (one follows every epoch)"}
    )
    negatives: int = field(
        default=0,
        metadata={
            "help": "ORM only: wrong variants of every correct training solution added as negatives "
            "(the task's model of its policies' mistakes, Task.corrupt); held-out rows stay as searched"
        },
    )

    def __post_init__(self) -> None:
        if self.negatives < 0:
            raise ValueError("negatives must be non-negative")
        if self.checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs, batch_size and lr must be positive")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError("holdout must lie in [0, 1)")
        if self.max_held_out_rows is not None and self.max_held_out_rows < 1:
            raise ValueError("max_held_out_rows must be positive (or None for all)")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError("max_rows must be positive (or None for all)")
        if self.weight_decay < 0:
            raise ValueError("weight_decay must be non-negative")
        if self.lora_r < 0 or self.lora_alpha <= 0:
            raise ValueError("lora_r must be non-negative and lora_alpha positive")
        if self.token_evidence and not self.confidence:
            raise ValueError("token_evidence needs confidence (it reads the base model's token log-probs)")


def split_by_group(
    rows: Sequence[LabelRow], holdout: float, seed: int
) -> tuple[list[LabelRow], list[LabelRow]]:
    """Train and held-out rows; a problem's rows all fall on one side."""
    groups = sorted({r.group for r in rows})
    random.Random(seed).shuffle(groups)
    held = set(groups[: math.floor(len(groups) * holdout)])
    return [r for r in rows if r.group not in held], [r for r in rows if r.group in held]


def cap_by_group(rows: Sequence[LabelRow], limit: int | None, seed: int) -> list[LabelRow]:
    """At most ``limit`` of ``rows`` (all if None): whole problems in a seeded order, stopping before the
    first that would pass the limit (at least one problem), so per-problem bootstraps stay valid."""
    if limit is None or len(rows) <= limit:
        return list(rows)
    by_group: dict[str, list[LabelRow]] = {}
    for row in rows:
        by_group.setdefault(row.group, []).append(row)
    groups = sorted(by_group)
    random.Random(seed).shuffle(groups)
    kept: list[LabelRow] = []
    for group in groups:
        if kept and len(kept) + len(by_group[group]) > limit:
            break
        kept.extend(by_group[group])
    return kept


def held_out_rows(rows: Sequence[LabelRow], config: CriticTrainConfig) -> list[LabelRow]:
    """The rows a critic trained on ``rows`` with ``config`` scored itself on (its ``held_out`` record):
    its held-out problems, capped at ``max_held_out_rows``."""
    held = split_by_group(rows, config.holdout, config.seed)[1]
    return cap_by_group(held, config.max_held_out_rows, config.seed)


def trained_groups(rows: Sequence[LabelRow], config: CriticTrainConfig) -> set[str]:
    """The problems a critic trained on ``rows`` with ``config`` learned from (all but its held-out ones)."""
    train_rows, _ = split_by_group(rows, config.holdout, config.seed)
    return {r.group for r in train_rows}


def training_steps(rows: Sequence[LabelRow], config: CriticTrainConfig, kind: str) -> int:
    """Optimizer steps ``train_critic`` takes at most (its progress bar's length): the rows left after
    the held-out problems and the ``max_rows`` cap, and an ORM's negatives, in batches, once per epoch."""
    train_rows, _ = split_by_group(rows, config.holdout, config.seed)
    n = len(train_rows) if config.max_rows is None else min(len(train_rows), config.max_rows)
    if kind == "orm":
        n += config.negatives * min(n, sum(r.target >= 1.0 for r in train_rows))
    return config.epochs * -(-n // config.batch_size)


def task_corrupter(task: Task) -> Callable[[LabelRow, random.Random], str | None]:
    """``corrupt(row, rng)`` for ``train_critic``: the task's wrong variant of a row's solution
    (``Task.corrupt``); raises ValueError for a task that writes none."""
    if not task.has_corruptions:
        raise ValueError(f"task {task.name!r} has no model of wrong solutions (Task.corrupt)")

    def corrupt(row: LabelRow, rng: random.Random) -> str | None:
        problem = task.problem_from_prompt(row.prompt, row.group)
        if problem is None:
            raise ValueError(f"tree of problem {row.group}: its root is not a {task.name} prompt")
        return task.corrupt(problem, row.solution, rng)

    return corrupt


def critic_checkpoint(
    path: str | Path,
    rows: Sequence[LabelRow],
    kind: str,
    config: CriticTrainConfig,
    *,
    files: Any,
    base: Any,
) -> Checkpoint:
    """The checkpoint of training a ``kind`` critic on ``rows`` from ``base`` (the loaded backbone), whose
    files are ``files`` (``lm.loading.model_files``): resumed only by the same rows, settings and
    starting weights, in the same dtype on the same kind of device."""
    return training_checkpoint(path, {"kind": kind, "rows": rows}, config, base=(base, files))


def critic_metrics(
    kind: str, scores: Sequence[float], rows: Sequence[LabelRow], *, critic: str | None = None
) -> dict[str, float]:
    """AUC for outcome/step labels; rank correlation and calibration for success-rate targets.
    Raises UserError naming ``critic`` (default: the ``kind`` critic) if a score is NaN or infinite."""
    # NaN scores still rank (argsort puts them last): an AUC of all-NaN scores read 0.438, not nothing.
    broken = sum(not math.isfinite(s) for s in scores)
    if broken:
        raise UserError(
            f"{broken} of {len(scores)} scores of {critic or f'the {kind} critic'} are NaN or infinite: "
            "its weights are broken (a float16 full fine-tune?); retrain it"
        )
    targets = [r.target for r in rows]
    metrics = {"rows": len(rows), "auc": auc(scores, targets), "brier": brier(scores, targets)}
    metrics["auc_within"] = auc_within(scores, targets, [r.group for r in rows])
    if kind == "value":
        metrics["spearman"] = spearman(scores, targets)
        metrics["spearman_ceiling"] = spearman_ceiling(targets)  # what ties in the targets allow
        metrics["ece"] = expected_calibration_error(scores, targets)
    return metrics


@frozen_heap
def train_critic(
    rows: Sequence[LabelRow],
    *,
    base: Any,
    tokenizer: Any,
    kind: str,
    config: CriticTrainConfig,
    on_step: Callable[[int, float], None] | None = None,
    corrupt: Callable[[LabelRow, random.Random], str | None] | None = None,
    checkpoint: Checkpoint | None = None,
) -> tuple[CriticModel, dict[str, Any]]:
    """Fine-tunes ``base`` (a causal LM, e.g. the policy) with a fresh head on ``rows``. With LoRA,
    adapters are injected into ``base`` itself (PEFT works in place): pass a model you can spare.
    ``corrupt`` makes an ORM's hard negatives (``config.negatives``, ``task_corrupter``); other
    kinds train on their labels alone. With ``checkpoint`` (``critic_checkpoint``), the trainable
    weights, optimizer and data order are saved after every epoch and every ``checkpoint_every`` steps,
    and a run of the same work resumes there, to the weights an uninterrupted run trains."""
    if config.negatives and kind == "orm" and corrupt is None:
        raise ValueError("negatives need the task's corrupt (task_corrupter)")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    train_rows = split_by_group(rows, config.holdout, config.seed)[0]
    if config.max_rows is not None and len(train_rows) > config.max_rows:
        train_rows = rng.sample(train_rows, config.max_rows)
    negatives: list[LabelRow] = []
    if config.negatives and kind == "orm" and corrupt is not None:  # held-out rows stay as searched
        negatives = corrupted_rows(train_rows, corrupt, config.negatives, rng)
        train_rows = train_rows + negatives
    held_rows = held_out_rows(rows, config)
    if not train_rows:
        raise ValueError("no training rows (are there verified outcomes in the trees?)")
    device = next(base.parameters()).device
    if config.lora_r:
        base = add_lora(base, r=config.lora_r, alpha=config.lora_alpha)
    elif config.confidence:  # the features must keep meaning what the base model thinks
        base.requires_grad_(False)
    model = CriticModel(base, kind, confidence=config.confidence, token_evidence=config.token_evidence)
    model.to(device)
    params = trainable_parameters(model)
    refuse_float16_training(params)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    # A frozen backbone gives every text the same features in every epoch: read them once.
    data: Texts | Features = (
        Features(model, tokenizer, train_rows, held_rows, device)
        if model.frozen
        else Texts(tokenizer, train_rows, held_rows, device)
    )
    resume = Resume(
        checkpoint, every=config.checkpoint_every, kept=lambda: {"best": (math.inf, None), "history": []}
    )
    resume.start(model, optimizer, rng)
    for epoch in resume.epochs(config.epochs):
        model.train()
        for batch in resume.batches(data.batches(config.batch_size, rng)):
            loss = data.loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            value = loss.item()
            _check_finite(value, f"the training loss at epoch {epoch + 1}, step {resume.step + 1}")
            if on_step is not None:
                on_step(resume.step, value)
        if not held_rows:  # nothing to choose an epoch by: the last one's weights stay
            continue
        held_loss = data.held_out_loss(model)
        _check_finite(held_loss, f"the held-out loss after epoch {epoch + 1}")
        resume.kept["history"].append({"epoch": epoch, "held_out_loss": held_loss})
        if held_loss < resume.kept["best"][0]:
            resume.kept["best"] = (held_loss, snapshot_trainable(model))
    best, history = resume.kept["best"], resume.kept["history"]
    if best[1] is not None:
        restore_trainable(model, best[1])
    # The last step can break the weights with a finite loss (fp16 AdamW); without held-out rows
    # nothing read them since.
    total = torch.stack([p.detach().sum(dtype=torch.float32) for p in params]).sum()  # NaN if any is
    _check_finite(total.item(), "the sum of the trained weights")
    model.eval()
    metrics: dict[str, Any] = {
        "kind": kind,
        "train_rows": len(train_rows),
        "negatives": len(negatives),
        "held_out_rows": len(held_rows),
        # What eval-critic calls in-sample: the problems (tree problem ids) its training rows came from.
        "trained_problems": sorted(trained_groups(rows, config)),
        "trainable_parameters": sum(p.numel() for p in params),
        "history": history,
        "train_seconds": round(resume.seconds(), 1),
        **({"resumed_at_step": resume.resumed_at} if resume.resumed_at is not None else {}),
        "config": asdict(config),
    }
    if held_rows:
        metrics["held_out"] = critic_metrics(kind, data.held_out_scores(model), held_rows)
    return model, metrics


def _check_finite(value: float, what: str) -> None:
    """UserError if ``value`` is NaN or infinite: training diverged, and its critic would score NaN."""
    if not math.isfinite(value):
        raise UserError(
            f"critic training diverged: {what} is {value}; train in --dtype float32 or bfloat16, "
            "or with LoRA (--lora-r)"
        )
