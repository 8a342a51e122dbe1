"""Learned critics: a causal-LM backbone with an MLP head read at the last token of a state.

One architecture serves the three critics of AlphaLLM (§4.4); they differ in their labels
(``train/labels.py``) and in what they are asked about:

- ``value``: v(s), the success probability from a (partial) solution;
- ``prm``: whether the latest step is right (scored at the step's last token);
- ``orm``: whether a complete solution is right (None on partial ones).

The backbone starts from the policy's base model, as in the paper; the head is
``Linear(h, h) -> GELU -> Linear(h, 1)`` with a sigmoid. A critic directory holds the backbone
(``save_pretrained``), its tokenizer, ``head.safetensors`` and ``critic.json``. A LoRA-trained
backbone (``lora_r > 0``) is stored as its PEFT adapter only, and ``critic.json`` names the base it
sits on (``lora_base``, an absolute path or hub id): a critic of a 7B policy is then megabytes,
and loading it needs that base where it was.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alphallm.critics.base import CriticInput
from alphallm.errors import UserError
from alphallm.lm.base import Usage
from alphallm.train.lora import is_peft_model, unwrap

__all__ = ["KINDS", "CriticModel", "LearnedCritic"]

KINDS = ("value", "prm", "orm")


class CriticModel(nn.Module):
    """Backbone + scalar head. ``forward`` returns one logit per sequence.  # (B,)"""

    def __init__(self, backbone: Any, kind: str) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        self.kind = kind
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # The transformer without its LM head: hidden states (B, T, H); left padding puts every
        # sequence's last token in the last column.
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        # A PEFT wrapper's .base_model is its tuner, not the transformer: unwrap first.
        hidden = (
            unwrap(self.backbone)
            .base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions)
            .last_hidden_state
        )
        return self.head(hidden[:, -1].float()).squeeze(-1)

    # -- persistence ----------------------------------------------------------------------------
    def save(self, directory: str | Path, tokenizer: Any, meta: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        if is_peft_model(self.backbone):  # only the adapter is written; remember its base
            meta = {**meta, "lora_base": _base_path(unwrap(self.backbone).name_or_path)}
        self.backbone.save_pretrained(directory / "backbone")
        tokenizer.save_pretrained(directory / "backbone")
        save_file(
            {k: v.contiguous() for k, v in self.head.state_dict().items()},
            str(directory / "head.safetensors"),
        )
        (directory / "critic.json").write_text(json.dumps({"kind": self.kind, **meta}, indent=2) + "\n")

    @classmethod
    def load(
        cls, directory: str | Path, *, device: str | None = None, dtype: str | None = None
    ) -> tuple[CriticModel, Any, dict[str, Any]]:
        """A saved critic; ``dtype`` is the backbone's (default: fp32 on CPU, bf16/fp16 on GPU)."""
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        from alphallm.lm.hf import load_causal_lm, pick_device

        directory = Path(directory)
        meta_path = directory / "critic.json"
        if not meta_path.is_file():
            raise UserError(f"{directory}: not a critic directory (no critic.json)")
        meta = json.loads(meta_path.read_text())
        if (directory / "backbone" / "adapter_config.json").is_file():
            from alphallm.train.lora import load_adapter

            base, _ = load_causal_lm(meta["lora_base"], device=device, dtype=dtype)
            backbone = load_adapter(base, directory / "backbone")
        else:
            backbone, _ = load_causal_lm(directory / "backbone", device=device, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(directory / "backbone")
        model = cls(backbone, meta["kind"])
        model.head.load_state_dict(load_file(str(directory / "head.safetensors")))
        model.to(pick_device(device)).eval()
        return model, tokenizer, meta


def _base_path(name: str) -> str:
    """An absolute path for a local base (the critic may be loaded from another directory)."""
    return str(Path(name).resolve()) if Path(name).is_dir() else name


def encode_batch(tokenizer: Any, texts: Sequence[str], device: torch.device, max_length: int = 1024) -> dict:
    """Left-padded ids and mask (the last column is every text's last token)."""
    encoded = [tokenizer(t)["input_ids"][-max_length:] for t in texts]
    width = max(len(e) for e in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, seq in enumerate(encoded):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


class LearnedCritic:
    """A trained value / PRM / ORM critic behind the ``Critic`` contract, with its own usage."""

    def __init__(
        self, model: CriticModel, tokenizer: Any, *, task_format: Any, batch_size: int = 128
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.format_prompt = task_format
        self.batch_size = batch_size
        self.usage = Usage()

    @classmethod
    def load(cls, directory: str | Path, *, task: Any, device: str | None = None) -> LearnedCritic:
        model, tokenizer, _ = CriticModel.load(directory, device=device)
        return cls(model, tokenizer, task_format=task.format_prompt)

    @property
    def name(self) -> str:
        return self.model.kind

    @torch.no_grad()
    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """Probabilities for full texts (prompt + solution)."""
        device = next(self.model.parameters()).device
        out: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = encode_batch(self.tokenizer, texts[start : start + self.batch_size], device)
            self.usage.calls += 1
            self.usage.forward_passes += 1
            self.usage.prefill_tokens += int(batch["attention_mask"].sum())
            out.extend(torch.sigmoid(self.model(**batch)).tolist())
        return out

    def score(self, items: Sequence[CriticInput]) -> list[float | None]:
        # An ORM judges complete solutions only; a PRM judges a latest step, which the root lacks.
        wanted = [
            i
            for i, item in enumerate(items)
            if (self.name != "orm" or item.terminal) and (self.name != "prm" or item.solution)
        ]
        scores = self.score_texts([self.format_prompt(items[i].problem) + items[i].solution for i in wanted])
        out: list[float | None] = [None] * len(items)
        for i, score in zip(wanted, scores):
            out[i] = score
        return out
