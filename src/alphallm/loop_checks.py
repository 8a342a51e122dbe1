"""Checks of the loop config that span several settings or ask the installed packages and the task: run
when the config loads, so that a mistake stops ``alphallm improve`` before its first stage, not hours in."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from alphallm.extras import install_hint, missing_modules
from alphallm.lm.loading import DTYPES
from alphallm.search.config import type_problem

if TYPE_CHECKING:
    from alphallm.loop_config import LearnSettings, LoopConfig

__all__ = [
    "TRAINERS",
    "check_difficulty",
    "check_installed",
    "check_stage_seeds",
    "check_train_dtype",
    "check_trainer",
]

TRAINERS = ("lean", "trl")


def check_trainer(learn: LearnSettings) -> None:
    """TRL's DPOTrainer appends EOS to both sides of every pair: a step pair would teach the policy to
    stop after one step (papers/qstar.md §3.5). (That TRL is installed, ``check_installed``.)"""
    if learn.trainer not in TRAINERS:
        raise ValueError(f"learn.trainer must be one of {TRAINERS}, not {learn.trainer!r}")
    if learn.trainer == "trl" and learn.use_dpo and learn.dpo_span == "step":
        raise ValueError(
            "learn.trainer: trl appends EOS to both sides of every DPO pair, which would teach a single step "
            "to end the solution; use learn.dpo_span: completion, or the lean trainer for step pairs"
        )


def check_installed(config: LoopConfig) -> None:
    """The extras the config's settings need: TRL's trainers need trl, datasets and peft, LoRA needs peft,
    Ray scale-out needs ray. Without them a run would stop at its first training stage or search, after
    the round-0 evaluation."""
    lora = [
        f"{name}.lora_r"
        for name, lora_r in (
            ("learn.sft", config.learn.sft.lora_r),
            ("learn.dpo", config.learn.dpo.lora_r if config.learn.use_dpo else 0),
            ("critics.train", config.critics.train.lora_r if config.critics.kinds else 0),
        )
        if lora_r
    ]
    needs = (
        (("trl", "datasets", "peft"), ["learn.trainer trl"] if config.learn.trainer == "trl" else []),
        (("peft",), lora),
        (("ray",), ["ray.enabled"] if config.ray.enabled else []),
    )
    for needed, by in needs:
        missing = missing_modules(needed) if by else []
        if missing:
            raise ValueError(f"{', '.join(by)}: needs {', '.join(missing)} ({install_hint(missing)})")


def check_train_dtype(config: LoopConfig) -> None:
    """An unknown dtype fails when the first round trains, and float16 full fine-tuning makes NaN weights
    there (``refuse_float16_training``): both are refused when the config loads."""
    dtype = config.train_dtype
    if dtype is None:
        return
    if dtype not in (*DTYPES, "auto"):
        raise ValueError(f"train_dtype: unknown dtype {dtype!r} ({', '.join(DTYPES)} or auto)")
    stages = {
        "learn.sft": config.learn.sft.lora_r,
        "learn.dpo": config.learn.dpo.lora_r if config.learn.use_dpo else 1,
        "critics.train": config.critics.train.lora_r if config.critics.kinds else 1,
    }
    full = [name for name, lora_r in stages.items() if not lora_r]
    if dtype == "float16" and full:
        raise ValueError(
            f"train_dtype: float16 full fine-tuning makes NaN weights ({', '.join(full)} without lora_r); "
            "use bfloat16 or float32, or LoRA"
        )


def check_difficulty(task: str, difficulty: dict[str, Any] | None) -> None:
    """A misspelt difficulty key is otherwise ignored, and min above max fails only mid-run."""
    if not difficulty:
        return
    from alphallm.tasks import get_task

    hints = get_task(task).difficulty_keys
    if hints:
        unknown = sorted(str(key) for key in difficulty if key not in hints)
        if unknown:
            raise ValueError(
                f"imagine.difficulty: unknown key(s) {', '.join(unknown)} for task {task!r} "
                f"({', '.join(hints)})"
            )
        for key, value in difficulty.items():
            problem = type_problem(value, hints[key], f"imagine.difficulty.{key}")
            if problem:
                raise ValueError(problem)
    for key, low in difficulty.items():
        high = difficulty.get(f"max_{str(key).removeprefix('min_')}") if str(key).startswith("min_") else None
        if isinstance(low, int | float) and isinstance(high, int | float) and low > high:
            raise ValueError(f"imagine.difficulty: {key} {low} is above max_{key[4:]} {high}")
    if hints:  # the rest against the task's defaults (a single min_ops above the default max_ops)
        try:
            get_task(task).check_difficulty(difficulty)
        except ValueError as error:
            raise ValueError(f"imagine.difficulty: {error}") from None


def check_stage_seeds(config: LoopConfig) -> None:
    """The loop seeds every stage from ``seed`` (and the round), so a seed set in a section would be
    ignored without a word: refuse it."""
    ignored = [name for name, seed in _section_seeds(config) if seed != 0]
    if ignored:
        raise ValueError(
            f"{', '.join(ignored)}: the loop seeds every stage from the top-level seed; set seed"
        )


def _section_seeds(section: Any, prefix: str = "") -> Iterator[tuple[str, int]]:
    """Every ``seed`` setting below the top level, by its dotted name (``learn.sft.seed``)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            yield from _section_seeds(value, f"{prefix}{f.name}.")
        elif f.name == "seed" and prefix:
            yield f"{prefix}seed", value
