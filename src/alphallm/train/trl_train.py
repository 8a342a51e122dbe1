"""SFT and DPO through Hugging Face TRL (``learn.trainer: trl``), with the lean trainers' settings and
contract: the same rows and pairs, the same config dataclasses, the model trained in place (LoRA merged).

What TRL adds: its ecosystem (accelerate, DeepSpeed/FSDP launchers, gradient checkpointing, which it
turns on by default) and bf16 mixed precision on GPUs that support it (fp32 weights and AdamW states,
bf16 matmuls; the lean loop runs in the weights' dtype). What is kept the lean trainers' way:

- SFT: loss on completion tokens only (TRL's prompt-completion format), EOS appended, linear warm-up
  then decay, the epoch with the lowest held-out loss kept (in memory, as ``sft`` does).
  transformers' warm-up starts at learning rate 0, so its first step changes nothing where ``sft``'s
  takes lr/warm-up steps: the same schedule one step later;
- DPO: the summed-log-prob sigmoid loss against an explicit reference whose log-probs are precomputed
  (TRL would otherwise load a "reference" from ``config._name_or_path``, which after a round of SFT is
  not the model passed: papers/qstar.md §3.3), constant learning rate, ``sft_weight`` as TRL's "sft"
  loss term. TRL appends EOS to every chosen and rejected text, so only pairs of complete solutions
  (``Pair.terminal``; the loop's ``dpo_span: completion``) are accepted.

With a ``checkpoint`` (``training_checkpoint``) both save every ``checkpoint_every`` steps through
transformers' own checkpoints (weights, optimizer, schedule, random states, data position) in its
directory, with this module's state beside each (the best epoch, the step logs), and a run of the same
work resumes from the last complete one (``resume_from_checkpoint``).

TRL tokenises prompt and completion separately, as ``encode_pair`` does; they agree whenever no token
merges across the boundary (always, for the shipped character tokenizer).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from alphallm.errors import UserError
from alphallm.io import files_identity
from alphallm.lm.hf import fitting_length
from alphallm.train.checkpoint import Checkpoint
from alphallm.train.dpo import DPOConfig, Pair
from alphallm.train.lora import (
    TARGET_MODULES,
    refuse_float16_training,
    restore_trainable,
    snapshot_trainable,
    trainable_parameters,
)
from alphallm.train.sft import SFTConfig, split_held_out
from alphallm.train.sft import training_steps as sft_steps

log = logging.getLogger(__name__)

__all__ = ["trl_dpo", "trl_sft"]


def trl_sft(
    model: Any,
    tokenizer: Any,
    rows: Sequence[tuple[str, str]],
    *,
    config: SFTConfig,
    on_step: Callable[[int, float], None] | None = None,
    checkpoint: Checkpoint | None = None,
) -> dict[str, Any]:
    """``sft`` through TRL's SFTTrainer: trains ``model`` in place on (prompt, completion) rows and
    returns the same metrics (``trainer: "trl"`` added); ``checkpoint`` as ``sft``'s."""
    import random

    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    if not rows:
        raise ValueError("no SFT rows")
    held, train = split_held_out(rows, config, random.Random(config.seed))  # the rows ``sft`` holds out
    use_cache = model.config.use_cache
    with _output_dir(checkpoint) as out:
        args = TRLSFTConfig(
            per_device_eval_batch_size=config.batch_size,
            # as ``sft`` counts it (an integer: transformers 5 dropped warmup_ratio, 4.x has no ratio steps)
            warmup_steps=max(1, int(sft_steps(len(rows), config) * config.warmup_ratio)),
            weight_decay=config.weight_decay,
            lr_scheduler_type="linear",
            completion_only_loss=True,
            eval_strategy="epoch" if held else "no",
            **_common_args(model, config, out, saving=checkpoint is not None),
        )
        with _no_dataset_bars():  # TRL maps its datasets with a bar per pass
            trainer = SFTTrainer(
                model=model,
                args=args,
                train_dataset=_rows_dataset(Dataset, train),
                eval_dataset=_rows_dataset(Dataset, held) if held else None,
                processing_class=tokenizer,
                peft_config=_lora_config(config.lora_r, config.lora_alpha),
            )
        steps = _quiet(trainer, on_step)
        refuse_float16_training(trainable_parameters(trainer.model))
        resume, kept = _last_saved(out) if checkpoint is not None else (None, {})
        # The lean trainer's early stopping: the starting weights count, and the best epoch is kept (a
        # resumed run has its record back from ``kept``).
        best = _Best(trainer.model, trainer.evaluate()["eval_loss"] if held and not kept else math.inf)
        trainer.add_callback(best)
        started = _resumed(trainer, kept, steps, best)
        trainer.train(resume_from_checkpoint=resume)
        best.restore()
    _merge_into(trainer.model, model, use_cache)
    history = [{"epoch": -1 + i, "held_out_loss": loss} for i, loss in enumerate(best.losses)]
    return {
        "rows": len(rows),
        "train_rows": len(train),
        "steps": steps.count,
        "trainable_parameters": best.trainable,
        "held_out_loss": best.loss if math.isfinite(best.loss) else None,
        "history": history if held else [],
        "seconds": round(time.perf_counter() - started, 1),
        **({"resumed_at_step": kept["step"]} if kept else {}),
        "config": asdict(config),
        "trainer": "trl",
    }


def trl_dpo(
    model: Any,
    ref_model: Any | None,
    tokenizer: Any,
    pairs: Sequence[Pair],
    *,
    config: DPOConfig,
    on_step: Callable[[int, float], None] | None = None,
    checkpoint: Checkpoint | None = None,
) -> dict[str, Any]:
    """``dpo`` through TRL's DPOTrainer: trains ``model`` in place against ``ref_model`` (None: ``model``
    as it starts) and returns the same metrics (``trainer: "trl"`` added); ``checkpoint`` as ``dpo``'s
    (TRL computes the reference log-probs again, from the reference or the starting weights)."""
    from datasets import Dataset
    from trl import DPOConfig as TRLDPOConfig
    from trl import DPOTrainer

    if not pairs:
        raise ValueError("no preference pairs")
    if not all(p.terminal for p in pairs):
        raise UserError(
            "TRL's DPOTrainer appends EOS to every chosen and rejected text, which teaches a single step to "
            "end the solution: train step pairs with the lean trainer (or use dpo_span: completion)"
        )
    if config.lora_r == 0:
        refuse_float16_training(trainable_parameters(model))
    use_cache = model.config.use_cache
    with _output_dir(checkpoint) as out:
        args = TRLDPOConfig(
            lr_scheduler_type="constant",
            weight_decay=0.0,
            beta=config.beta,
            loss_type=["sigmoid", "sft"] if config.sft_weight else ["sigmoid"],
            loss_weights=[1.0, config.sft_weight] if config.sft_weight else None,
            precompute_ref_log_probs=True,
            **_common_args(model, config, out, saving=checkpoint is not None),
        )
        rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
        with _no_dataset_bars():
            trainer = DPOTrainer(
                model=model,
                # None: TRL's precompute reads the starting model itself (never a model from its path).
                ref_model=ref_model,
                args=args,
                train_dataset=Dataset.from_list(rows),
                processing_class=tokenizer,
                peft_config=_lora_config(config.lora_r, config.lora_alpha),
            )
        steps = _quiet(trainer, on_step)
        trainable = sum(p.numel() for p in trainable_parameters(trainer.model))
        resume, kept = _last_saved(out) if checkpoint is not None else (None, {})
        started = _resumed(trainer, kept, steps)
        trainer.train(resume_from_checkpoint=resume)
    _merge_into(trainer.model, model, use_cache)
    tail = steps.logs[-max(1, math.ceil(len(steps.logs) / 4)) :]
    names = {"margin": "rewards/margins", "accuracy": "rewards/accuracies", "chosen_reward": "rewards/chosen"}
    return {
        "pairs": len(pairs),
        "steps": steps.count,
        "trainable_parameters": trainable,
        "first_loss": steps.logs[0]["loss"] if steps.logs else None,
        "final": {
            "loss": sum(log["loss"] for log in tail) / len(tail),
            **{ours: sum(log[theirs] for log in tail) / len(tail) for ours, theirs in names.items()},
        },
        "seconds": round(time.perf_counter() - started, 1),
        **({"resumed_at_step": kept["step"]} if kept else {}),
        "config": asdict(config),
        "trainer": "trl",
    }


@contextmanager
def _output_dir(checkpoint: Checkpoint | None) -> Iterator[str]:
    """Where TRL writes: the checkpoint's directory, or a temporary one that stays empty."""
    if checkpoint is not None:
        yield str(checkpoint.directory())
        return
    with tempfile.TemporaryDirectory(prefix="alphallm-trl-") as out:
        yield out


def _last_saved(out: str) -> tuple[str | None, dict[str, Any]]:
    """The newest of transformers' checkpoints in ``out`` that this module finished saving beside
    (``_Keep``) and that is whole still, and what it saved: (None, {}) when there is none. transformers
    would stop on a damaged checkpoint with a traceback, or go on from a damaged state silently."""
    done = [d for d in Path(out).glob("checkpoint-*") if d.name.rpartition("-")[2].isdigit()]
    for folder in sorted(done, key=lambda d: int(d.name.rpartition("-")[2]), reverse=True):
        try:
            kept = torch.load(folder / _KEPT, weights_only=False)
        except Exception:  # missing or damaged: an older one, or a fresh start
            kept = None
        if isinstance(kept, dict) and kept.get("files") == _checkpoint_files(folder):
            return str(folder), kept
        # Said, so that a resumed stage that goes back further, or starts over, has a reason in the log.
        log.warning("checkpoint %s is incomplete or damaged; not resumed from", folder)
    return None, {}


def _checkpoint_files(folder: Path) -> list[list[Any]]:
    """Name, size and time of transformers' files in a checkpoint folder: a file cut short, rewritten or
    gone since ``_Keep`` saved beside it changes them."""
    return [f for f in files_identity(folder) if not f[0].startswith(_KEPT)]


def _resumed(trainer: Any, kept: dict[str, Any], steps: _Steps, best: _Best | None = None) -> float:
    """Puts back what a resumed run's callbacks had (``kept``), adds the callback that saves it beside
    every checkpoint, and returns the training's start time (earlier by the time trained before a kill)."""
    if kept:
        steps.count, steps.logs = kept["step"], kept["logs"]
        if best is not None:
            best.loss, best.losses, best.state = (
                kept["best"]["loss"],
                kept["best"]["losses"],
                kept["best"]["state"],
            )
    started = time.perf_counter() - kept.get("seconds", 0.0)
    if trainer.args.save_strategy != "no":
        trainer.add_callback(_Keep(steps, best, started))
    return started


def _common_args(model: Any, config: SFTConfig | DPOConfig, out: str, *, saving: bool) -> dict[str, Any]:
    """TRL arguments both trainers share: our epochs, learning rate, batch size, seed and length cap
    (within the model's positions, as the lean trainers cut); one log a step (the progress bar and the
    metrics read it), checkpoints every ``checkpoint_every`` steps only when ``saving`` (else ``out`` stays
    empty), no reporting, and bf16 mixed precision only where the device has it (TRL's default, bf16
    everywhere, stops on CPUs and older GPUs: TRL #3616)."""
    device = next(model.parameters()).device
    return {
        "output_dir": out,
        "num_train_epochs": config.epochs,
        "learning_rate": config.lr,
        "per_device_train_batch_size": config.batch_size,
        "seed": config.seed,
        "max_length": fitting_length(model, config.max_length),
        "logging_steps": 1,
        "save_strategy": "steps" if saving else "no",
        "save_steps": config.checkpoint_every,
        # Two: the newest can lack ``_Keep``'s file (killed between the two writes), the one before has it.
        "save_total_limit": 2,
        "report_to": "none",
        "disable_tqdm": True,
        "max_grad_norm": 1.0,
        "use_cpu": device.type == "cpu",
        "bf16": device.type == "cuda" and torch.cuda.is_bf16_supported(),
        "dataset_num_proc": None,
    }


def _quiet(trainer: Any, on_step: Callable[[int, float], None] | None) -> _Steps:
    """The trainer's per-step logs go to ``on_step`` (our progress bar), not printed as dicts."""
    from transformers import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    steps = _Steps(on_step)
    trainer.add_callback(steps)
    return steps


@contextmanager
def _no_dataset_bars() -> Iterator[None]:
    """No bars while TRL prepares: its dataset passes and its reference log-probs print their own."""
    import os

    import datasets

    shown, tqdm_disable = not datasets.are_progress_bars_disabled(), os.environ.get("TQDM_DISABLE")
    datasets.disable_progress_bars()
    os.environ["TQDM_DISABLE"] = "1"  # what TRL's reference pass reads
    try:
        yield
    finally:
        if shown:
            datasets.enable_progress_bars()
        if tqdm_disable is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = tqdm_disable


def _rows_dataset(dataset: Any, rows: Sequence[tuple[str, str]]) -> Any:
    return dataset.from_list([{"prompt": prompt, "completion": completion} for prompt, completion in rows])


def _lora_config(r: int, alpha: int) -> Any:
    if not r:
        return None
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, target_modules=TARGET_MODULES, task_type="CAUSAL_LM")


def _merge_into(trained: Any, model: Any, use_cache: bool) -> None:
    """Hands ``model`` back as the lean trainers do: adapters folded in (PEFT injects them into ``model``
    itself, so the merge leaves it holding the trained weights), and without what TRL switched on for
    training: gradient checkpointing, and ``use_cache: false`` in the config the policy is saved with."""
    from alphallm.train.lora import merge_lora

    if merge_lora(trained) is not model:  # never hand back weights that did not train
        raise RuntimeError("TRL trained a model other than the one passed")
    # transformers 5 renamed gradient to activation checkpointing; 4.x has only the old names.
    new_names = hasattr(model, "activation_checkpointing_disable")
    if getattr(model, "is_activation_checkpointing" if new_names else "is_gradient_checkpointing", False):
        (model.activation_checkpointing_disable if new_names else model.gradient_checkpointing_disable)()
    model.config.use_cache = use_cache
    model.eval()


class _Steps(TrainerCallback):
    """Counts optimizer steps and keeps TRL's per-step logs, calling ``on_step(step, loss)``."""

    def __init__(self, on_step: Callable[[int, float], None] | None) -> None:
        self.on_step, self.count = on_step, 0
        self.logs: list[dict[str, float]] = []

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any
    ) -> None:
        if logs and "loss" in logs:
            self.logs.append(logs)
            if self.on_step is not None:
                self.on_step(self.count, float(logs["loss"]))
            self.count += 1


class _Best(TrainerCallback):
    """Keeps the trainable weights of the epoch with the lowest held-out loss (the starting weights
    first), in memory: for LoRA a few MB, where checkpoints would write the whole model each epoch."""

    def __init__(self, model: Any, start_loss: float) -> None:
        self.model, self.loss, self.losses = model, start_loss, [start_loss]
        self.state = snapshot_trainable(model) if math.isfinite(start_loss) else None
        self.trainable = sum(p.numel() for p in trainable_parameters(model))

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kw: Any
    ) -> None:
        loss = (metrics or {}).get("eval_loss")
        if loss is None:
            return
        self.losses.append(loss)
        if loss < self.loss:
            self.loss, self.state = loss, snapshot_trainable(self.model)

    def restore(self) -> None:
        if self.state is not None:
            restore_trainable(self.model, self.state)


_KEPT = "alphallm.pt"  # beside each of transformers' checkpoints: what our callbacks keep


class _Keep(TrainerCallback):
    """After transformers saves a checkpoint, saves beside it what our callbacks hold: the step count and
    logs (``_Steps``), the best epoch so far (``_Best``), and the training time.

    transformers saves a step's checkpoint before the evaluation at the end of the epoch that step ends,
    and a run resumed there would never evaluate that epoch; so such a step evaluates first, and the
    epoch's end does not again. The last step saves nothing (transformers would save the whole model
    and optimizer once more, only to have them removed)."""

    def __init__(self, steps: _Steps, best: _Best | None, started: float) -> None:
        self.steps, self.best, self.started = steps, best, started
        self.evaluated = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step >= state.max_steps:  # the model is taken from memory: no last checkpoint
            control.should_save = False
            return
        ends_epoch = float(state.epoch or 0).is_integer()
        if control.should_save and ends_epoch and args.eval_strategy == "epoch":
            control.should_evaluate = self.evaluated = True

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.evaluated:
            control.should_evaluate = self.evaluated = False

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        kept: dict[str, Any] = {"step": self.steps.count, "logs": self.steps.logs}
        if self.best is not None:
            kept["best"] = {"loss": self.best.loss, "losses": self.best.losses, "state": self.best.state}
        kept["seconds"] = time.perf_counter() - self.started
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        kept["files"] = _checkpoint_files(folder)
        with open(folder / f"{_KEPT}.tmp", "wb") as handle:
            torch.save(kept, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(folder / f"{_KEPT}.tmp", folder / _KEPT)
