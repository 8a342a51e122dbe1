"""LoRA through PEFT, and the parameter bookkeeping that full and LoRA training share.

How LoRA-trained models are stored (one rule per consumer):

- a **policy** is merged (``merge_and_unload``) at the end of SFT/DPO, so a policy directory is a
  plain Hugging Face model that every command, the next round and other tools load unchanged; the
  adapter itself is kept only when asked for (``adapter_dir``);
- a **critic** keeps its adapter unmerged in ``backbone/`` (PEFT format) next to the path of the
  base it was trained on (``critics/learned.py``): a critic is small on disk and only we load it.

``lora_r = 0`` means full fine-tuning everywhere. PEFT is imported only when LoRA is used.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from alphallm.errors import UserError

__all__ = [
    "add_lora",
    "is_peft_model",
    "load_adapter",
    "merge_lora",
    "refuse_float16_training",
    "restore_trainable",
    "snapshot_trainable",
    "trainable_parameters",
    "unwrap",
]

# Every linear layer of the transformer blocks (attention and MLP), never the LM head or embeddings:
# PEFT's "all-linear" shortcut, which knows each architecture's output layer.
TARGET_MODULES = "all-linear"


def add_lora(model: Any, *, r: int, alpha: int, dropout: float = 0.0) -> Any:
    """Wraps a causal LM in fresh LoRA adapters of rank ``r``; only the adapters stay trainable.

    The adapters are injected into ``model``'s own modules (PEFT works in place) and returned
    wrapped in a ``PeftModel``. B starts at zero, so the wrapped model computes exactly what
    ``model`` did. Adapters stay fp32 when the base is bf16/fp16 (PEFT's autocast default).
    """
    from peft import LoraConfig, get_peft_model

    if r < 1:
        raise ValueError("LoRA rank r must be at least 1")
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=TARGET_MODULES, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, config)


def is_peft_model(model: Any) -> bool:
    # Duck-typed so that plain models never import peft; transformers' models have no get_base_model.
    return hasattr(model, "get_base_model") and hasattr(model, "peft_config")


def unwrap(model: Any) -> Any:
    """The causal LM inside a PEFT wrapper (adapters still injected), or the model itself."""
    return model.get_base_model() if is_peft_model(model) else model


def merge_lora(model: Any) -> Any:
    """Folds the adapters into the base weights and removes the LoRA layers (in place, so the
    object the caller passed to ``add_lora`` becomes a plain model again); returns it."""
    return model.merge_and_unload() if is_peft_model(model) else model


def load_adapter(base: Any, directory: str | Path) -> Any:
    """A saved adapter on top of ``base`` (the model it was trained on), ready for inference."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(directory)).eval()


def trainable_parameters(model: Any) -> list[torch.nn.Parameter]:
    """What the optimizer updates: all weights in full fine-tuning, the adapters (and a critic's
    head) with LoRA."""
    return [p for p in model.parameters() if p.requires_grad]


def refuse_float16_training(params: Iterable[torch.Tensor]) -> None:
    """UserError if ``params`` (what the optimizer updates) hold float16 weights: with no fp32 master
    copy, AdamW's updates underflow and overflow, and the weights turn NaN. SFT, DPO and critics ask."""
    if any(p.dtype == torch.float16 for p in params):
        raise UserError(
            "full fine-tuning float16 weights makes NaN weights (with no fp32 master copy its updates "
            "underflow and overflow): load the model in bfloat16 or float32 (--dtype; the loop's "
            "train_dtype), or train LoRA adapters (--lora-r; lora_r)"
        )


def snapshot_trainable(model: Any, *, copy: bool = True) -> dict[str, torch.Tensor]:
    """A copy of the trainable weights only (for early stopping). With LoRA that is a few MB, where
    ``deepcopy(model.state_dict())`` would copy the whole frozen base. ``copy=False`` gives the weights
    themselves, for writing to disk at once (a checkpoint) without a second copy in memory."""
    return {
        name: p.detach().clone() if copy else p.detach()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


@torch.no_grad()
def restore_trainable(model: Any, snapshot: dict[str, torch.Tensor]) -> None:
    """Writes a snapshot back (tied weights are one parameter, so both ends follow)."""
    for name, parameter in model.named_parameters():
        if name in snapshot:
            parameter.copy_(snapshot[name])
