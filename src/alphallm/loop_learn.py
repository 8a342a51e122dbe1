"""A round's policy learning: SFT from the policy before (or the start) on the verified solutions so far,
optionally mixed with retry traces made from its failed attempts, then step-DPO on the round's sibling
pairs with the previous policy as the reference. Both write a model directory under ``round-k/``; a stage
killed mid-training resumes from its checkpoint beside it (``round-k/sft.checkpoint``,
``round-k/policy.checkpoint``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphallm.train.checkpoint import Checkpoint, steps_to, training_checkpoint
from alphallm.train.dpo import DPOConfig, Pair
from alphallm.train.dpo import training_steps as dpo_steps

if TYPE_CHECKING:
    from alphallm.loop import Loop

__all__ = ["dpo_candidate", "dpo_stage", "nothing_to_learn", "sft_stage", "trainers"]


def nothing_to_learn(loop: Loop, k: int) -> bool:
    """Whether round k has no SFT row (its own, or with ``learn.replay`` any round's so far) and no DPO
    pair to train on: its search verified nothing. Such a round writes no model, since its candidates
    would be copies of a policy already kept (a copy of a 7 B policy is 15 GB), and its gate keeps the
    policy before without scoring a copy of it."""
    return not loop.sft_rows(k) and not (loop.config.learn.use_dpo and loop.read(k, "data")["pairs"])


def sft_stage(loop: Loop, k: int) -> dict[str, Any]:
    """Round k's SFT model (``round-k/sft``) and its training record, with the retry traces' record
    when ``learn.retry_mix`` mixes them in."""
    from alphallm.lm import load_lm
    from alphallm.lm.loading import load_causal_lm, model_files, save_causal_lm, training_dtype
    from alphallm.train.retry import retry_traces
    from alphallm.train.sft import training_steps as sft_steps

    learn = loop.config.learn
    rows = loop.sft_rows(k)
    if nothing_to_learn(loop, k):
        return {"rows": 0}
    retry: dict[str, Any] = {}
    # Retry traces first: their sampling model is let go before the model to train is loaded.
    if learn.retry_mix and rows:  # from the failed attempts of the policy before
        with loop.ui.progress(f"round {k} failed attempts", len({p for p, _ in rows})) as advance:
            rows, retry = retry_traces(
                loop.task,
                load_lm(loop.policy(k - 1)),
                rows,
                mix=learn.retry_mix,
                samples=learn.retry_samples,
                steps=learn.retry_steps,
                seed=loop.seed(k, "sft"),
                progress=advance,
            )
    start = loop.config.policy if learn.sft_from == "start" else loop.policy(k - 1)
    model, tokenizer = load_causal_lm(
        start, dtype=training_dtype(loop.config.train_dtype, lora=learn.sft.lora_r > 0)
    )
    metrics: dict[str, Any] = {"rows": 0}
    where = loop.round_dir(k) / "sft.checkpoint"
    if rows:
        config = replace(learn.sft, seed=loop.seed(k, "sft"))
        checkpoint = training_checkpoint(where, rows, config, start=(model, model_files(start)))
        with loop.ui.progress(f"round {k} SFT", sft_steps(len(rows), config)) as advance:
            sft = trainers(learn.trainer)[0]
            metrics = sft(
                model, tokenizer, rows, config=config, on_step=steps_to(advance), checkpoint=checkpoint
            )
    save_causal_lm(model, tokenizer, loop.round_dir(k) / "sft")
    Checkpoint(where, None).remove()
    return {**metrics, **({"retry": retry} if retry else {})}


def dpo_stage(loop: Loop, k: int) -> dict[str, Any]:
    """Round k's candidate policy (``round-k/policy``): the SFT model after DPO on the data stage's
    pairs, or the SFT model itself when DPO is off or there are no pairs."""
    from alphallm.lm.loading import load_causal_lm, save_causal_lm, training_dtype

    pairs = [Pair(**p) for p in loop.read(k, "data")["pairs"]]
    if nothing_to_learn(loop, k):
        return {"pairs": len(pairs), "skipped": True}
    if not (loop.config.learn.use_dpo and pairs):  # the SFT model, in the dtype SFT trained it in
        sft_dtype = training_dtype(loop.config.train_dtype, lora=loop.config.learn.sft.lora_r > 0)
        model, tokenizer = load_causal_lm(loop.round_dir(k) / "sft", dtype=sft_dtype)
        save_causal_lm(model, tokenizer, loop.round_dir(k) / "policy")
        return {"pairs": len(pairs), "skipped": True}
    config = dpo_config(loop, k)
    where = loop.round_dir(k) / "policy.checkpoint"
    with loop.ui.progress(f"round {k} DPO", dpo_steps(len(pairs), config)) as advance:
        model, tokenizer, metrics = dpo_candidate(
            loop, k, pairs, config, on_step=steps_to(advance), checkpoint=where
        )
    save_causal_lm(model, tokenizer, loop.round_dir(k) / "policy")
    Checkpoint(where, None).remove()
    return metrics


def dpo_config(loop: Loop, k: int) -> DPOConfig:
    """The run's DPO settings with round k's seed."""
    return replace(loop.config.learn.dpo, seed=loop.seed(k, "dpo"))


def dpo_candidate(
    loop: Loop,
    k: int,
    pairs: list[Pair],
    config: DPOConfig,
    *,
    self_reference: bool = False,
    on_step: Callable[[int, float], None] | None = None,
    checkpoint: Path | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Round k's SFT model trained by DPO on ``pairs``: the model, its tokenizer and the training
    metrics. The reference is the previous round's policy (a frozen copy of the SFT model with
    ``self_reference``). With ``checkpoint`` (a directory) the training is saved there and resumes from
    it. The DPO stage and benchmarks/dpo_sweep.py both build candidates here."""
    from alphallm.lm.loading import load_causal_lm, model_files, training_dtype

    dtype = training_dtype(loop.config.train_dtype, lora=config.lora_r > 0)  # the reference's too
    start = loop.round_dir(k) / "sft"
    model, tokenizer = load_causal_lm(start, dtype=dtype)
    models = {"start": (model, model_files(start))}
    reference = None
    if not self_reference:
        reference = load_causal_lm(loop.policy(k - 1), dtype=dtype)[0]
        models["reference"] = (reference, model_files(loop.policy(k - 1)))
    saving = training_checkpoint(checkpoint, pairs, config, **models) if checkpoint is not None else None
    dpo = trainers(loop.config.learn.trainer)[1]
    metrics = dpo(model, reference, tokenizer, pairs, config=config, on_step=on_step, checkpoint=saving)
    return model, tokenizer, metrics


def trainers(name: str) -> tuple[Callable[..., dict[str, Any]], Callable[..., dict[str, Any]]]:
    """The SFT and DPO functions of ``learn.trainer``: this package's lean loops, or TRL's trainers
    behind the same signatures (``train/trl_train.py``)."""
    if name == "trl":
        from alphallm.train.trl_train import trl_dpo, trl_sft

        return trl_sft, trl_dpo
    from alphallm.train.dpo import dpo
    from alphallm.train.sft import sft

    return sft, dpo
