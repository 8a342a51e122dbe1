"""The sizes of the tiny random models the tests build (no download): one place, so that a family's
test differs from the shipped Llama's only in what it is about."""

from __future__ import annotations

from typing import Any


def tiny_sizes(tokenizer: Any, **changes: Any) -> dict[str, Any]:
    """Config keyword arguments of a 2-layer, 32-wide decoder over ``tokenizer``'s vocabulary and
    special tokens (shared by Llama, Mistral, Qwen2, Granite, Cohere, Gemma and their kin)."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **changes,
    }
