"""Language-model backends: batched option sampling and continuation scoring with token accounting."""

from __future__ import annotations

from alphallm.lm.base import Completion, LanguageModel, Metered, Usage

__all__ = ["Completion", "LanguageModel", "Metered", "Usage", "load_lm"]


def load_lm(name: str, *, device: str | None = None, dtype: str | None = None) -> LanguageModel:
    """Loads a shipped model name, a local model directory or a hub id with the transformers backend;
    a URL (``http://host:8000/v1[#model]``) is a model on an OpenAI-compatible server, whose device and
    dtype are the server's."""
    from alphallm.lm.served import ServedLM, is_served

    if is_served(name):
        return ServedLM(name)
    from alphallm.lm.hf import TransformersLM  # torch/transformers load only when a model is needed

    return TransformersLM.from_pretrained(name, device=device, dtype=dtype)
