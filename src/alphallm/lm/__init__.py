"""Language-model backends: batched option sampling and continuation scoring with token accounting."""

from __future__ import annotations

from alphallm.lm.base import Completion, LanguageModel, Metered, Usage

__all__ = ["Completion", "LanguageModel", "Metered", "Usage", "load_lm"]


def load_lm(name: str, *, device: str | None = None, dtype: str | None = None) -> LanguageModel:
    """Loads a shipped model name, a local model directory or a hub id with the transformers backend."""
    from alphallm.lm.hf import TransformersLM  # torch/transformers load only when a model is needed

    return TransformersLM.from_pretrained(name, device=device, dtype=dtype)
