"""Critics' numbers: a frozen backbone's token log-probs are the model's own on families that scale
or cap their logits, and float16 or diverged training is refused rather than saved as NaN."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from alphallm.critics.learned import CriticModel
from alphallm.errors import UserError
from alphallm.lm.hf import encode_batch
from alphallm.lm.loading import load_causal_lm
from alphallm.train.critic import (
    CriticTrainConfig,
    critic_metrics,
    held_out_rows,
    train_critic,
)
from alphallm.train.labels import LabelRow
from test_critics import _synthetic_rows

LOGIT_FAMILIES = {
    "granite": ("GraniteConfig", "GraniteForCausalLM", {"logits_scaling": 8.0}),
    "cohere": ("CohereConfig", "CohereForCausalLM", {"logit_scale": 0.0625}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"final_logit_softcapping": 0.5, "head_dim": 8}),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", {"final_logit_softcapping": 0.5, "head_dim": 8}),
}


@pytest.mark.parametrize("family", sorted(LOGIT_FAMILIES))
def test_a_frozen_confidence_critic_reads_the_models_own_log_probs(family: str) -> None:
    import transformers
    from tests.tiny_models import tiny_sizes

    from alphallm.lm.tokenizer import build_char_tokenizer

    config_name, model_name, extra = LOGIT_FAMILIES[family]
    config_class = getattr(transformers, config_name, None)
    model_class = getattr(transformers, model_name, None)
    if config_class is None or model_class is None:
        pytest.skip(f"transformers {transformers.__version__} has no {model_name}")
    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    config = config_class(
        **tiny_sizes(tokenizer, max_position_embeddings=128, initializer_range=0.2, **extra)
    )
    base = model_class(config).eval()
    model = CriticModel(base, "orm", confidence=True)
    model.backbone.requires_grad_(False)
    assert model.frozen  # the path that reuses the features' hidden states
    prompts, solutions = ["Q: 1+2\n", "Q: 12*3\n"], ["3\n", "36\nAnswer: 36\n"]
    batch = encode_batch(tokenizer, prompts, solutions, torch.device("cpu"), model.max_length)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        hidden = base.base_model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
        got = model._token_logprobs(ids, mask, positions, hidden)
        logits = base(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    expected = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    real = mask[:, 1:].bool()  # left padding predicts nothing
    assert (got - expected)[real].abs().max().item() < 1e-4  # 2 to 4.4 without the family's change


def test_full_fine_tuning_refuses_float16_weights(tiny_model_dir: Path) -> None:
    base, tokenizer = load_causal_lm(str(tiny_model_dir), dtype="float16")
    rows = _synthetic_rows(16, 0)
    config = CriticTrainConfig(epochs=1, batch_size=8, holdout=0.25)
    with pytest.raises(UserError, match=r"float16 weights .*bfloat16 or float32 .*LoRA"):
        train_critic(rows, base=base, tokenizer=tokenizer, kind="orm", config=config)
    # SFT and DPO refuse it too, before any step (DPO before its reference pass); with LoRA they train.
    from alphallm.train.dpo import DPOConfig, Pair, dpo
    from alphallm.train.sft import SFTConfig, sft

    text = [("Q: 1+2\n", "1+2=3\nAnswer: 3\n")] * 4
    pairs = [Pair(prompt=p, chosen=c, rejected=c.replace("3", "4")) for p, c in text]
    with pytest.raises(UserError, match=r"float16 weights"):
        sft(base, tokenizer, text, config=SFTConfig(epochs=1, holdout=0.0))
    with pytest.raises(UserError, match=r"float16 weights"):
        dpo(base, None, tokenizer, pairs, config=DPOConfig(epochs=1))
    assert sft(base, tokenizer, text, config=SFTConfig(epochs=1, holdout=0.0, lora_r=2))["steps"] == 1


def test_critic_training_stops_when_its_loss_is_not_finite(tiny_model_dir: Path) -> None:
    rows = _synthetic_rows(16, 0)
    config = CriticTrainConfig(epochs=2, batch_size=8, holdout=0.25)
    base, tokenizer = load_causal_lm(str(tiny_model_dir))
    with torch.no_grad():
        base.model.norm.weight.fill_(float("nan"))  # as fp16 weights end up: every score NaN
    with pytest.raises(UserError, match=r"training loss at epoch 1, step 1 is nan.*--dtype float32"):
        train_critic(rows, base=base, tokenizer=tokenizer, kind="orm", config=config)
    # Held-out rows read after each epoch: a NaN there stops training too.
    held = set(held_out_rows(rows, config))
    broken = [replace(r, weight=float("nan")) if r in held else r for r in rows]
    base, tokenizer = load_causal_lm(str(tiny_model_dir))
    with pytest.raises(UserError, match="held-out loss after epoch 1 is nan"):
        train_critic(broken, base=base, tokenizer=tokenizer, kind="orm", config=config)


def test_critic_metrics_refuse_scores_that_are_not_finite() -> None:
    rows = [LabelRow("Q\n", f"{i}\n", float(i % 2)) for i in range(4)]
    assert critic_metrics("orm", [0.1, 0.9, 0.2, 0.8], rows)["auc"] == 1.0
    with pytest.raises(UserError, match="2 of 4 scores of the orm critic are NaN or infinite"):
        critic_metrics("orm", [float("nan"), 0.9, float("nan"), 0.8], rows)  # the AUC read 0.5
    with pytest.raises(UserError, match="the previous value critic"):
        critic_metrics("value", [0.5, float("inf"), 0.5, 0.5], rows, critic="the previous value critic")
