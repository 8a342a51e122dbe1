"""The recipe that makes the embedded base models: a tiny Llama trained on whole task documents.

The documents (problem + solution) come from each task's teacher, which is deliberately limited:
arith's teacher slips on a fraction of its calculations and shows easier problems than the test
split; game24's teacher plays random legal moves, so the model learns the rules but not the
strategy. Both leave room for search and self-improvement. Everything is seeded; the same command
gives the same weights on the same software.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from alphallm.io import atomic_dir, check_out_dir, write_json
from alphallm.tasks import get_task
from alphallm.tasks.base import Task
from alphallm.train.checkpoint import Checkpoint, checkpoint_beside, restore_torch_random, torch_random

__all__ = ["RECIPES", "PretrainConfig", "pretrain"]

# The tasks whose teacher slips with probability ``noise`` (game24's plays random moves instead).
NOISY_TEACHERS = ("arith",)


@dataclass
class PretrainConfig:
    """Pretraining of a tiny base model for one task."""

    task: str = field(default="arith", metadata={"help": "task whose teacher writes the documents"})
    out: str = field(default="models/arith-base", metadata={"help": "output model directory"})
    seed: int = field(default=0, metadata={"help": "seed for data, initialisation and sampling"})
    steps: int = field(default=4000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=64, metadata={"help": "documents per step"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (AdamW)"})
    min_lr: float = field(default=1e-4, metadata={"help": "learning rate at the end of the cosine decay"})
    warmup_steps: int = field(default=200, metadata={"help": "linear warm-up steps"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay"})
    hidden_size: int = field(default=192, metadata={"help": "model width"})
    num_layers: int = field(default=4, metadata={"help": "transformer blocks"})
    num_heads: int = field(default=6, metadata={"help": "attention heads"})
    intermediate_size: int = field(default=512, metadata={"help": "MLP width"})
    max_positions: int = field(default=512, metadata={"help": "longest document in tokens"})
    noise: float = field(default=0.0, metadata={"help": "teacher slip probability per step (arith)"})
    difficulty: dict[str, Any] | None = field(default=None, metadata={"help": "task generator difficulty"})
    eval_problems: int = field(
        default=200, metadata={"help": "test problems for the model card's greedy accuracy"}
    )
    checkpoint_every: int = field(
        default=100,
        metadata={"help": "steps between checkpoints in <out>.checkpoint/, from which a killed run resumes"},
    )

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "hidden_size", "num_layers", "num_heads", "intermediate_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        if not 0.0 <= self.noise < 1.0:
            raise ValueError("noise must lie in [0, 1)")
        if self.noise and self.task not in NOISY_TEACHERS:
            raise ValueError(
                f"noise is a slip rate of the {' and '.join(NOISY_TEACHERS)} teacher; {self.task}'s has none"
            )
        if not self.lr > 0:  # written so that NaN fails too
            raise ValueError("lr must be positive")
        if not self.min_lr >= 0:
            raise ValueError("min_lr must not be negative")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise ValueError("warmup_steps and weight_decay must not be negative")
        if self.checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        if self.eval_problems < 1:
            raise ValueError("eval_problems must be at least 1 (the model card reports their accuracy)")


# What each task's teacher writes (the model cards quote it).
DATA_RECIPES: dict[str, str] = {
    "arith": (
        "canonical one-operation-per-line reductions of fresh train-split expressions with 1-5 operations "
        "and operands up to 20; each calculation slips (off by 1, 2 or 10, carried forward) with "
        "probability `noise`. The test split has 4-6 operations."
    ),
    "game24": (
        "random legal moves (whole numbers up to 100) on random 4-number puzzles from 1-13 outside the dev "
        "and test splits (unsolvable ones included), ending with the expression the moves built, whatever "
        "its value: the rules, not the strategy."
    ),
}

# The recipes of the shipped models (the model cards quote them).
RECIPES: dict[str, dict[str, Any]] = {
    "arith": {"noise": 0.15, "steps": 1500},
    "game24": {"steps": 1200},
}


def documents(
    task: Task, rng: random.Random, n: int, *, noise: float, difficulty: dict[str, Any] | None
) -> list[str]:
    """``n`` fresh training documents from the task's teacher (never a dev or test problem)."""
    problems = task.generate(rng, n, difficulty)
    return [task.format_document(p, task.teacher_solution(p, rng, noise=noise)) for p in problems]


def _length_bucketed(
    task: Task, rng: random.Random, config: PretrainConfig, pool: int = 16
) -> list[list[str]]:
    """``pool`` batches of documents of similar length, in random order: padding costs compute, and
    on two CPU cores compute is the budget."""
    docs = documents(task, rng, config.batch_size * pool, noise=config.noise, difficulty=config.difficulty)
    docs.sort(key=len)
    batches = [docs[i : i + config.batch_size] for i in range(0, len(docs), config.batch_size)]
    rng.shuffle(batches)
    return batches


def build_model(config: PretrainConfig, tokenizer: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(model_config)


def _batch(tokenizer: Any, docs: list[str], max_positions: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids with EOS appended; padding is masked out of the loss."""
    encoded = [[*tokenizer(d)["input_ids"][: max_positions - 1], tokenizer.eos_token_id] for d in docs]
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(encoded):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _lr_at(step: int, config: PretrainConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress))


def pretrain(
    config: PretrainConfig,
    *,
    command: str = "",
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Trains, evaluates greedily on the test split, and saves model, tokenizer and model card.

    Every ``checkpoint_every`` steps the whole training state (weights, optimizer, data order, seeds)
    is saved in ``<out>.checkpoint/``; the same config run again resumes there and trains the same
    weights an uninterrupted run would. The checkpoint goes once the model is saved."""
    from alphallm.lm.tokenizer import build_char_tokenizer

    # Refused before training, not after it: a file or a data directory at ``out`` would be lost.
    check_out_dir(config.out, marker="config.json", what="model")
    checkpoint = Checkpoint(checkpoint_beside(config.out), _training(config))
    task = get_task(config.task)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    tokenizer = build_char_tokenizer()
    model = build_model(config, tokenizer)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95)
    )
    batches: list[list[str]] = []
    first, seconds = 0, 0.0
    state = checkpoint.load()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        restore_torch_random(state)
        rng.setstate(state["rng"])
        batches, first, seconds = state["batches"], state["step"], state["seconds"]
    model.train()
    started = time.perf_counter() - seconds
    for step in range(first, config.steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, config)
        if not batches:
            batches = _length_bucketed(task, rng, config)
        loss = model(**_batch(tokenizer, batches.pop(), config.max_positions)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "batches": batches}
            state |= {**torch_random(), "rng": rng.getstate(), "step": step + 1}
            checkpoint.save(state | {"seconds": time.perf_counter() - started})
        if on_step is not None:
            on_step(step, loss.item())
    train_seconds = time.perf_counter() - started
    card = _save(config, model, tokenizer, task, train_seconds, command, resumed_at=first)
    checkpoint.remove()
    return card


def _training(config: PretrainConfig) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: every setting that shapes the training."""
    ignored = ("out", "eval_problems", "checkpoint_every")
    return {k: v for k, v in asdict(config).items() if k not in ignored}


def _save(
    config: PretrainConfig,
    model: Any,
    tokenizer: Any,
    task: Task,
    seconds: float,
    command: str,
    *,
    resumed_at: int = 0,
) -> dict[str, Any]:
    from alphallm.evaluation import evaluate
    from alphallm.lm.hf import TransformersLM

    model.eval()
    lm = TransformersLM(model, tokenizer)
    problems = task.problems("test")[: config.eval_problems]
    result = evaluate(task, lm, problems, method="greedy")
    card = {
        "name": Path(config.out).name,
        "command": command,
        "config": asdict(config),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(seconds, 1),
        **({"resumed_at_step": resumed_at} if resumed_at else {}),
        "torch": torch.__version__,
        "greedy_test": result.to_dict(),
    }
    with atomic_dir(config.out, marker="config.json", what="model") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "training.json", card)
        (tmp / "README.md").write_text(model_card(card), encoding="utf-8")
    return card


def model_card(card: dict[str, Any]) -> str:
    """A short human-readable card: what the model is, how it was made, what it scores."""
    config, metrics = card["config"], card["greedy_test"]["metrics"]
    lines = [
        f"# {card['name']}",
        "",
        f"A tiny Llama-style base model for the `{config['task']}` task of alphallm, trained from scratch on",
        "documents written by the task's deliberately limited teacher (see `alphallm.train.pretrain`).",
        "",
        "## How it was made",
        "",
        f"- Command: `{card['command']}`",
        f"- Data: {DATA_RECIPES.get(config['task'], 'the task teacher')}",
        f"- Seed: {config['seed']}; steps: {config['steps']} x {config['batch_size']} documents; "
        f"teacher noise: {config['noise']}; difficulty: {json.dumps(config['difficulty'])}",
        f"- Architecture: {config['num_layers']} layers, width {config['hidden_size']}, "
        f"{config['num_heads']} heads, MLP {config['intermediate_size']}; {card['parameters']:,} parameters; "
        "character tokenizer",
        f"- Training time: {card['train_seconds']} s on CPU (torch {card['torch']})",
        "",
        f"## Measured (greedy, first {card['greedy_test']['problems']} test problems)",
        "",
    ]
    lines += [f"- {name}: {value:.3f}" for name, value in metrics.items()]
    return "\n".join(lines) + "\n"
