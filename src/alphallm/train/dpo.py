"""Step-level DPO on preference pairs from search trees (a lean loop).

The traps of TRL's DPOTrainer are avoided by construction (../shared/papers/qstar.md §3):
- the reference is the model object passed in (the previous round's policy), never something
  reloaded from ``config._name_or_path``; its log-probs are computed once, up front (so
  ``ref_model=None`` can mean "the starting weights", which with LoRA is the base with its fresh
  adapters at zero: no second copy of a big model);
- each pair starts at the same state (prompt + the shared prefix); EOS is appended only to a pair
  whose sides end at terminals (r->Q* assumes trajectories end there), never to a single step
  (TRL appends it to every string, so a step would be taught to end the solution);
- everything stays in fp32 on CPU;
- with ``lora_r > 0`` only LoRA adapters are trained, then merged into the model (``train/lora.py``).
Loss: ``-log sigmoid(beta * [(log pi - log ref)(chosen) - (log pi - log ref)(rejected)])``, plus an
optional NLL term on the chosen side (RPO) against likelihood displacement.
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
from alphallm.train.lora import add_lora, merge_lora, refuse_float16_training, trainable_parameters

__all__ = ["DPOConfig", "Pair", "dpo"]


@dataclass(frozen=True)
class Pair:
    """A preference at one state: ``prompt`` is the problem prompt plus the shared solution prefix.
    ``terminal``: both sides end a solution (EOS follows them); False for a pair of single steps."""

    prompt: str
    chosen: str
    rejected: str
    terminal: bool = True


@dataclass(frozen=True)
class DPOConfig:
    """Step-DPO settings."""

    beta: float = field(default=0.1, metadata={"help": "DPO beta (strength of the implicit KL)"})
    lr: float = field(default=1e-4, metadata={"help": "learning rate (AdamW)"})
    epochs: int = field(default=2, metadata={"help": "passes over the pairs"})
    batch_size: int = field(default=16, metadata={"help": "pairs per step"})
    sft_weight: float = field(default=0.0, metadata={"help": "weight of the NLL on chosen completions (RPO)"})
    max_length: int = field(default=512, metadata={"help": "longest prompt + completion in tokens"})
    seed: int = field(default=0, metadata={"help": "shuffling seed"})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank (0: full fine-tuning)"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scale alpha (the update is alpha/r * BA)"})
    checkpoint_every: int = field(
        default=200, metadata={"help": "steps between checkpoints within an epoch (one follows every epoch)"}
    )

    def __post_init__(self) -> None:
        if self.beta <= 0 or self.lr <= 0 or self.epochs < 1 or self.batch_size < 1 or self.sft_weight < 0:
            raise ValueError("beta, lr, epochs and batch_size must be positive; sft_weight non-negative")
        if self.checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        if self.lora_r < 0 or self.lora_alpha <= 0:
            raise ValueError("lora_r must be non-negative and lora_alpha positive")
        if self.max_length < 1:
            raise ValueError("max_length must be at least 1")


def training_steps(n_pairs: int, config: DPOConfig) -> int:
    """Optimizer steps ``dpo`` takes on ``n_pairs`` pairs (a progress bar's length): every pair, in
    batches, once per epoch."""
    return config.epochs * math.ceil(n_pairs / config.batch_size)


def _logps(model: Any, tokenizer: Any, pairs: Sequence[Pair], config: DPOConfig) -> tuple[torch.Tensor, ...]:
    """Summed log-probs of chosen and rejected completions, and the chosen token counts."""
    device = next(model.parameters()).device
    prompts, eos = [p.prompt for p in pairs], [p.terminal for p in pairs]

    def side(completions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = encode_pairs(
            tokenizer,
            prompts,
            completions,
            add_eos=eos,
            max_length=fitting_length(model, config.max_length),
            device=device,
        )
        return sequence_logprobs(model, batch)

    chosen, chosen_count = side([p.chosen for p in pairs])
    rejected, _ = side([p.rejected for p in pairs])
    return chosen, rejected, chosen_count


@torch.no_grad()
def _reference(
    ref_model: Any, tokenizer: Any, pairs: Sequence[Pair], config: DPOConfig
) -> list[tuple[float, float]]:
    ref_model.eval()
    out: list[tuple[float, float]] = []
    for start in range(0, len(pairs), 64):
        chosen, rejected, _ = _logps(ref_model, tokenizer, pairs[start : start + 64], config)
        out.extend(zip(chosen.tolist(), rejected.tolist()))
    return out


@frozen_heap
def dpo(
    model: Any,
    ref_model: Any | None,
    tokenizer: Any,
    pairs: Sequence[Pair],
    *,
    config: DPOConfig,
    on_step: Callable[[int, float], None] | None = None,
    adapter_dir: str | Path | None = None,
    checkpoint: Checkpoint | None = None,
) -> dict[str, Any]:
    """Trains ``model`` in place against the frozen ``ref_model``; returns loss and reward metrics.

    ``ref_model=None`` takes ``model``'s own starting weights as the reference. With
    ``config.lora_r > 0`` the adapters are merged into ``model`` at the end; ``adapter_dir`` also
    saves them first (PEFT format). With ``checkpoint`` (``training_checkpoint``) the training is saved
    after every epoch and every ``checkpoint_every`` steps, and a run of the same work resumes there, to
    the same weights (the reference's log-probs are saved with it, so they are not computed again).
    """
    if model is ref_model:
        raise ValueError("the reference must be a separate model (the previous round's policy) or None")
    if not pairs:
        raise ValueError("no preference pairs")
    if not config.lora_r:  # before the reference pass, which can take a while on a real model
        refuse_float16_training(trainable_parameters(model))
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)

    def fresh() -> dict[str, Any]:
        # Before any adapter exists and before any update: None means the starting weights.
        reference = _reference(ref_model if ref_model is not None else model, tokenizer, pairs, config)
        return {"reference": reference, "order": list(range(len(pairs))), "history": []}

    resume = Resume(checkpoint, every=config.checkpoint_every, kept=fresh)
    reference, history = resume.kept["reference"], resume.kept["history"]
    if config.lora_r:
        model = add_lora(model, r=config.lora_r, alpha=config.lora_alpha)
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    resume.start(model, optimizer, rng)
    for _ in resume.epochs(config.epochs):
        # Each epoch shuffles the last one's order: kept, so that a resumed epoch shuffles the same.
        indices = list(resume.kept["order"])
        rng.shuffle(indices)
        model.train()
        starts = range(0, len(indices), config.batch_size)
        for batch in resume.batches([indices[i : i + config.batch_size] for i in starts]):
            chosen, rejected, count = _logps(model, tokenizer, [pairs[i] for i in batch], config)
            ref = torch.tensor([reference[i] for i in batch], device=chosen.device)  # (b, 2)
            chosen_reward = config.beta * (chosen - ref[:, 0])
            rejected_reward = config.beta * (rejected - ref[:, 1])
            loss = -torch.nn.functional.logsigmoid(chosen_reward - rejected_reward).mean()
            if config.sft_weight:
                loss = loss + config.sft_weight * (-chosen.sum() / count.sum().clamp(min=1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            history.append(
                {
                    "loss": loss.item(),
                    "margin": (chosen_reward - rejected_reward).mean().item(),
                    "accuracy": (chosen_reward > rejected_reward).float().mean().item(),
                    "chosen_reward": chosen_reward.mean().item(),
                }
            )
            if on_step is not None:
                on_step(resume.step, loss.item())
        resume.kept["order"] = indices
    model.eval()
    if config.lora_r:
        if adapter_dir is not None:
            model.save_pretrained(str(adapter_dir))
        merge_lora(model)
    tail = history[-max(1, math.ceil(len(history) / 4)) :]
    return {
        "pairs": len(pairs),
        "steps": resume.step,
        "trainable_parameters": sum(p.numel() for p in params),
        "first_loss": history[0]["loss"],
        "final": {k: sum(h[k] for h in tail) / len(tail) for k in tail[0]},
        "seconds": round(resume.seconds(), 1),
        **({"resumed_at_step": resume.resumed_at} if resume.resumed_at is not None else {}),
        "config": asdict(config),
    }
