"""What a critic trains on, batch by batch: the rows' texts read through the whole model at every step
(the backbone learns too), or, with a frozen backbone, the head's inputs read once; their weighted
binary cross-entropy; and the critic's scores of rows (``predict``)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from alphallm.critics.learned import CriticModel
from alphallm.lm.hf import encode_batch
from alphallm.train.labels import LabelRow

__all__ = ["Features", "Texts", "predict"]


def _batches(rows: list[LabelRow], size: int, rng: random.Random) -> list[list[LabelRow]]:
    """Batches of rows of similar length (less padding), in random order."""
    ordered = sorted(rows, key=lambda r: len(r.text))
    batches = [ordered[i : i + size] for i in range(0, len(ordered), size)]
    rng.shuffle(batches)
    return batches


def _loss(
    model: CriticModel, tokenizer: Any, batch: Sequence[LabelRow], device: torch.device
) -> torch.Tensor:
    texts = [r.prompt for r in batch], [r.solution for r in batch]
    logits = model(**encode_batch(tokenizer, *texts, device, model.max_length))
    targets = torch.tensor([r.target for r in batch], device=device)
    weights = torch.tensor([r.weight for r in batch], device=device)
    return _weighted_bce(logits, targets, weights)


def _weighted_bce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy against soft targets, each row counted by its weight (its outcomes)."""
    losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (losses * weights).sum() / weights.sum()


@torch.no_grad()
def predict(
    model: CriticModel, tokenizer: Any, rows: Sequence[LabelRow], batch_size: int = 128
) -> list[float]:
    model.eval()
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        texts = [r.prompt for r in chunk], [r.solution for r in chunk]
        batch = encode_batch(tokenizer, *texts, device, model.max_length)
        out.extend(torch.sigmoid(model(**batch)).tolist())
    return out


class Texts:
    """Training rows read through the whole model at every step (the backbone learns too)."""

    def __init__(
        self, tokenizer: Any, train_rows: list[LabelRow], held_rows: list[LabelRow], device: torch.device
    ) -> None:
        self.tokenizer, self.train, self.held, self.device = tokenizer, train_rows, held_rows, device

    def batches(self, size: int, rng: random.Random) -> list[Any]:
        return _batches(self.train, size, rng)

    def loss(self, model: CriticModel, batch: Any) -> torch.Tensor:
        return _loss(model, self.tokenizer, batch, self.device)

    def held_out_loss(self, model: CriticModel) -> float:
        return _held_out_loss(model, self.tokenizer, self.held, self.device)

    def held_out_scores(self, model: CriticModel) -> list[float]:
        return predict(model, self.tokenizer, self.held)


class Features:
    """The head's inputs of every training and held-out row, computed once (frozen backbone)."""

    def __init__(
        self,
        model: CriticModel,
        tokenizer: Any,
        train_rows: Sequence[LabelRow],
        held_rows: Sequence[LabelRow],
        device: torch.device,
    ) -> None:
        self.train = self._read(model, tokenizer, train_rows, device)
        self.held = self._read(model, tokenizer, held_rows, device) if held_rows else None

    @staticmethod
    @torch.no_grad()
    def _read(
        model: CriticModel, tokenizer: Any, rows: Sequence[LabelRow], device: torch.device
    ) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """(features, targets (N,), weights (N,)) in the rows' order; the features are (N, F), or
        with token evidence a list of N (1 + n_i, F) tensors."""
        model.eval()
        order = sorted(range(len(rows)), key=lambda i: len(rows[i].text))  # similar lengths: less padding
        parts: dict[int, torch.Tensor] = {}
        for start in range(0, len(order), 128):
            chunk = order[start : start + 128]
            texts = [rows[i].prompt for i in chunk], [rows[i].solution for i in chunk]
            batch = encode_batch(tokenizer, *texts, device, model.max_length)
            for i, feature in zip(chunk, model.features(**batch)):
                parts[i] = feature
        ordered = [parts[i] for i in range(len(rows))]
        features = ordered if model.token_evidence else torch.stack(ordered)
        targets = torch.tensor([r.target for r in rows], device=device)
        weights = torch.tensor([r.weight for r in rows], device=device)
        return features, targets, weights

    def batches(self, size: int, rng: random.Random) -> list[Any]:
        order = list(range(len(self.train[0])))
        rng.shuffle(order)
        return [order[i : i + size] for i in range(0, len(order), size)]

    @staticmethod
    def _weighted_loss(model: CriticModel, data: tuple[Any, ...], index: Any) -> torch.Tensor:
        features, targets, weights = data
        if isinstance(features, list):  # token evidence: one tensor per text
            features = features[index] if isinstance(index, slice) else [features[i] for i in index]
        else:
            features = features[index]
        return _weighted_bce(model.logits(features), targets[index], weights[index])

    def loss(self, model: CriticModel, batch: Any) -> torch.Tensor:
        return self._weighted_loss(model, self.train, batch)

    @torch.no_grad()
    def held_out_loss(self, model: CriticModel) -> float:
        assert self.held is not None
        model.eval()
        return self._weighted_loss(model, self.held, slice(None)).item()

    @torch.no_grad()
    def held_out_scores(self, model: CriticModel) -> list[float]:
        assert self.held is not None
        return torch.sigmoid(model.logits(self.held[0])).tolist()


@torch.no_grad()
def _held_out_loss(
    model: CriticModel, tokenizer: Any, rows: Sequence[LabelRow], device: torch.device
) -> float:
    model.eval()
    total = weight = 0.0
    for start in range(0, len(rows), 128):
        batch = rows[start : start + 128]
        batch_weight = sum(r.weight for r in batch)
        total += _loss(model, tokenizer, batch, device).item() * batch_weight
        weight += batch_weight
    return total / max(weight, 1e-9)
