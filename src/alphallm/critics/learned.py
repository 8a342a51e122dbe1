"""Learned critics: a causal-LM backbone with an MLP head read at the last token of a state.

One architecture serves the three critics of AlphaLLM (§4.4); they differ in their labels
(``train/labels.py``) and in what they are asked about:

- ``value``: v(s), the success probability from a (partial) solution;
- ``prm``: whether the latest step is right (scored at the step's last token);
- ``orm``: whether a complete solution is right (None on partial ones).

The backbone starts from the policy's base model, as in the paper; the head is
``Linear(h, h) -> GELU -> Linear(h, 1)`` with a sigmoid.

With ``confidence=True`` the head also reads how the *unchanged* base model rated the solution's own
tokens (min, mean and sum of the token log-probs, and how many fell below -1): a policy's slips
are its low-probability tokens, which a head on one hidden state cannot see (the hidden state
predicts the *next* token; it does not record whether the previous one was the likely one).
Then the backbone stays frozen (only the head trains) or, with LoRA, the features come from
the base with its adapters switched off, so they keep their meaning while the critic trains.

With ``token_evidence=True`` (on top of ``confidence``) a second small MLP reads every solution
token: the hidden state that predicted it and how the base rated it (its log-prob, the most likely
token's log-prob, the entropy). Its per-token scores are pooled with a soft maximum and lower the
head's logit: ``logit = head(global) - softplus(logsumexp_t e_t)``. The min/mean features above
cannot tell a slipped digit from a harmless unlikely choice (which sum to reduce first); a token's
context can, and one bad token is enough to sink a solution.

A critic directory holds the backbone (``save_pretrained``), its tokenizer, ``head.safetensors``
and ``critic.json``. A LoRA-trained backbone (``lora_r > 0``) is stored as its PEFT adapter only,
and ``critic.json`` names the base it sits on (``lora_base``, an absolute path or hub id): a critic
of a 7B policy is then megabytes, and loading it needs that base where it was.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alphallm.critics.base import CriticInput
from alphallm.critics.critic_meta import KINDS, check_critic_task, read_meta
from alphallm.errors import UserError, first_line
from alphallm.io import write_json
from alphallm.lm.base import Usage
from alphallm.lm.hf import encode_batch, fitting_length, output_logits
from alphallm.train.lora import is_peft_model, unwrap

__all__ = [
    "CriticModel",
    "FeatureCache",
    "LearnedCritic",
    "confidence_features",
    "files_digest",
    "load_critics",
]

N_CONFIDENCE = 4
N_TOKEN_STATS = 4  # a token's log-prob, the top token's, the entropy, and the gap to the top
MAX_TEXT_TOKENS = 1024  # the most tokens of a text a critic reads (fewer where its backbone has fewer)


def confidence_features(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 4) from token log-probs (B, L) over the tokens ``mask`` marks: the lowest, the mean,
    the sum and the number below -1 (a token the model gave under 37%), scaled to about [-3, 3].
    Zeros when nothing is marked (the empty solution at the root)."""
    marked = mask.bool()
    masked = torch.where(marked, logp, torch.zeros_like(logp))
    count = marked.sum(-1)
    total = masked.sum(-1)
    features = [
        masked.min(-1).values / 5,
        total / count.clamp(min=1),
        total / 20,
        ((logp < -1) & marked).sum(-1) / 4,
    ]
    return torch.stack(features, -1).float()


class CriticModel(nn.Module):
    """Backbone + scalar head. ``forward`` returns one logit per sequence.  # (B,)"""

    def __init__(
        self, backbone: Any, kind: str, *, confidence: bool = False, token_evidence: bool = False
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        if token_evidence and not confidence:
            raise ValueError("token_evidence reads the base model's token log-probs: it needs confidence")
        self.kind = kind
        self.confidence = confidence
        self.token_evidence = token_evidence
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        inputs = hidden + (N_CONFIDENCE if confidence else 0)
        self.head = nn.Sequential(nn.Linear(inputs, hidden), nn.GELU(), nn.Linear(hidden, 1))
        # A token's row is as wide as the global one (hidden + 4), so both fit one tensor per text.
        self.evidence: nn.Sequential | None = None
        if token_evidence:
            first, last = nn.Linear(hidden + N_TOKEN_STATS, 64), nn.Linear(64, 1)
            # Start as the plain confidence critic: every token's score far below zero, so that
            # softplus(logsumexp) is about 0 for a few hundred tokens until training finds culprits.
            nn.init.zeros_(last.weight)
            nn.init.constant_(last.bias, -8.0)
            self.evidence = nn.Sequential(first, nn.GELU(), last)

    @property
    def feature_kind(self) -> str:
        """What ``features`` returns; critics on one backbone share cached features of one kind."""
        return "tokens" if self.token_evidence else "confidence" if self.confidence else "last"

    @property
    def max_length(self) -> int:
        """Tokens of a text the critic reads (its end: ``encode_batch``), within the backbone's positions."""
        return fitting_length(self.backbone, MAX_TEXT_TOKENS)

    @property
    def frozen(self) -> bool:
        """True when only the head trains: the features of a text then never change."""
        return not any(p.requires_grad for p in self.backbone.parameters())

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        solution_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One logit per sequence (B,). ``solution_mask`` (B, T) marks the solution's tokens (the
        confidence features are read over them only; the prompt's numbers are random draws)."""
        return self.logits(self.features(input_ids, attention_mask, solution_mask))

    def logits(self, features: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """The heads on what ``features`` returned (or on rows of it, from a cache): (B,)."""
        if self.evidence is None:
            rows = features if isinstance(features, torch.Tensor) else torch.stack(list(features))
            return self.head(rows).squeeze(-1)
        texts = list(features)
        padded = nn.utils.rnn.pad_sequence(texts, batch_first=True)  # (B, 1 + n, H + 4)
        lengths = torch.tensor([len(t) - 1 for t in texts], device=padded.device)
        marked = torch.arange(padded.shape[1] - 1, device=padded.device)[None] < lengths[:, None]
        scores = self.evidence(padded[:, 1:]).squeeze(-1).masked_fill(~marked, -1e4)  # (B, n)
        # A soft maximum: one bad token sinks the text; no tokens (the root) take nothing off.
        return self.head(padded[:, 0]).squeeze(-1) - nn.functional.softplus(torch.logsumexp(scores, -1))

    def features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        solution_mask: torch.Tensor | None = None,
    ) -> Any:
        """What the heads read: (B, H [+ 4]), the last token's hidden state and with ``confidence``
        the base model's log-prob features of the solution; with ``token_evidence`` a list of
        (1 + n_i, H + 4) tensors, that row first and then one row per solution token."""
        # The transformer without its LM head: hidden states (B, T, H); left padding puts every
        # sequence's last token in the last column.
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            # A PEFT wrapper's .base_model is its tuner, not the transformer: unwrap first.
            hidden = (
                unwrap(self.backbone)
                .base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions)
                .last_hidden_state
            )
        pooled = hidden[:, -1].float()
        if not self.confidence:
            return pooled
        if solution_mask is None:
            raise ValueError("a confidence critic needs the solution mask (encode_batch with prompts)")
        stats = self._token_stats(input_ids, attention_mask, positions, hidden)  # (B, T-1, 4)
        marked = solution_mask[:, 1:].bool()  # token t+1 is the solution's; hidden[t] predicted it
        pooled = torch.cat([pooled, confidence_features(stats[..., 0], marked)], -1)
        if not self.token_evidence:
            return pooled
        tokens = torch.cat([hidden[:, :-1].float(), stats], -1)
        return [torch.cat([pooled[i, None], tokens[i][marked[i]]]) for i in range(len(pooled))]

    @torch.no_grad()
    def _token_logprobs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        positions: torch.Tensor,
        hidden: torch.Tensor,
    ) -> torch.Tensor:
        """(B, T-1): the unchanged base model's log-prob of each token given the ones before it."""
        return self._token_stats(input_ids, attention_mask, positions, hidden)[..., 0]

    @torch.no_grad()
    def _token_stats(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        positions: torch.Tensor,
        hidden: torch.Tensor,
    ) -> torch.Tensor:
        """(B, T-1, 4): how the unchanged base model rated each token given the ones before it:
        its log-prob, the most likely token's, the entropy, and the log-prob minus the top one's."""
        model = unwrap(self.backbone)
        if is_peft_model(self.backbone):  # the base as it was: adapters off
            with self.backbone.disable_adapter():
                logits = model(
                    input_ids=input_ids, attention_mask=attention_mask, position_ids=positions
                ).logits
        else:  # frozen backbone: this pass's hidden states are the base's
            logits = output_logits(model, hidden)
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # as token_logprobs, kept for the rest
        taken = logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        top = logp.max(-1).values
        entropy = -(logp.exp() * logp).sum(-1)
        return torch.stack([taken, top, entropy, taken - top], -1)

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
        if self.evidence is not None:
            save_file(
                {k: v.contiguous() for k, v in self.evidence.state_dict().items()},
                str(directory / "evidence.safetensors"),
            )
        meta = {
            "kind": self.kind,
            "confidence": self.confidence,
            "token_evidence": self.token_evidence,
            **meta,
        }
        write_json(directory / "critic.json", meta)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        device: str | None = None,
        dtype: str | None = None,
        backbone: Any = None,
    ) -> tuple[CriticModel, Any, dict[str, Any]]:
        """A saved critic; ``dtype`` is the backbone's (default: fp32 on CPU, bf16/fp16 on GPU).
        ``backbone``: one already in memory with exactly the saved weights (``load_critics``)."""
        from transformers import AutoTokenizer

        from alphallm.lm.loading import load_causal_lm, pick_device

        directory = Path(directory)
        meta = read_meta(directory)
        if not (directory / "head.safetensors").is_file():  # before the backbone, which takes longer
            raise UserError(f"{directory}: no head.safetensors")
        if backbone is None and (directory / "backbone" / "adapter_config.json").is_file():
            from alphallm.train.lora import load_adapter

            if not isinstance(meta.get("lora_base"), str):
                raise UserError(f"{directory}: critic.json names no lora_base for its LoRA backbone")
            base, _ = load_causal_lm(meta["lora_base"], device=device, dtype=dtype)
            backbone = load_adapter(base, directory / "backbone")
        elif backbone is None:
            if not (directory / "backbone").is_dir():
                raise UserError(f"{directory}: no backbone directory")
            backbone, _ = load_causal_lm(directory / "backbone", device=device, dtype=dtype)
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory / "backbone")
        except Exception as exc:  # missing or corrupt tokenizer files
            raise UserError(
                f"{directory}: could not load the backbone's tokenizer ({first_line(exc)})"
            ) from None
        model = cls(
            backbone,
            meta["kind"],
            confidence=bool(meta.get("confidence", False)),
            token_evidence=bool(meta.get("token_evidence", False)),
        )
        _load_weights(model.head, directory / "head.safetensors")
        if model.evidence is not None:
            _load_weights(model.evidence, directory / "evidence.safetensors")
        model.to(pick_device(device)).eval()
        return model, tokenizer, meta


def _load_weights(module: nn.Module, path: Path) -> None:
    """A saved head into ``module``; a missing, truncated or mismatched file is a one-line error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise UserError(f"{path.parent}: no {path.name}")
    try:
        module.load_state_dict(load_file(str(path)))
    except (SafetensorError, OSError, RuntimeError) as exc:  # RuntimeError: shapes or names differ
        raise UserError(
            f"{path.parent}: {path.name} is unreadable or not this critic's ({first_line(exc)})"
        ) from None


def _base_path(name: str) -> str:
    """An absolute path for a local base (the critic may be loaded from another directory)."""
    return str(Path(name).resolve()) if Path(name).is_dir() else name


class FeatureCache:
    """What one backbone made of recent texts (the head's inputs), shared by the critics that sit on
    it: value, PRM and ORM of one policy score the same new nodes, and with a shared cache the
    backbone reads each node's text once for all of them. Bounded: the oldest entries go first."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str, str], torch.Tensor] = OrderedDict()

    def get(self, key: tuple[str, str, str]) -> torch.Tensor | None:
        return self._items.get(key)

    def put(self, key: tuple[str, str, str], features: torch.Tensor) -> None:
        self._items[key] = features
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


class LearnedCritic:
    """A trained value / PRM / ORM critic behind the ``Critic`` contract, with its own usage
    (the backbone's tokens it actually read: texts found in a shared ``cache`` cost nothing)."""

    def __init__(
        self,
        model: CriticModel,
        tokenizer: Any,
        *,
        task_format: Any,
        batch_size: int = 128,
        cache: FeatureCache | None = None,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.format_prompt = task_format
        self.batch_size = batch_size
        self.cache = cache
        self.usage = Usage()

    @classmethod
    def load(cls, directory: str | Path, *, task: Any, device: str | None = None) -> LearnedCritic:
        """One saved critic (``load_critics`` loads several, sharing what they can)."""
        return load_critics({"critic": directory}, task=task, device=device)["critic"]

    @property
    def name(self) -> str:
        return self.model.kind

    @torch.no_grad()
    def score_texts(self, prompts: Sequence[str], solutions: Sequence[str]) -> list[float]:
        """Probabilities for prompt + solution texts."""
        keys = [(self.model.feature_kind, p, s) for p, s in zip(prompts, solutions)]
        found = {i: self.cache.get(key) for i, key in enumerate(keys)} if self.cache is not None else {}
        features = {i: f for i, f in found.items() if f is not None}
        missing = [i for i in range(len(keys)) if i not in features]
        device = next(self.model.parameters()).device
        for start in range(0, len(missing), self.batch_size):
            rows = missing[start : start + self.batch_size]
            batch = encode_batch(
                self.tokenizer,
                [prompts[i] for i in rows],
                [solutions[i] for i in rows],
                device,
                self.model.max_length,
            )
            self.usage.calls += 1
            self.usage.forward_passes += 1
            self.usage.prefill_tokens += int(batch["attention_mask"].sum())
            for i, row in zip(rows, self.model.features(**batch)):
                features[i] = row
                if self.cache is not None:
                    self.cache.put(keys[i], row)
        if not keys:
            return []
        logits = self.model.logits([features[i] for i in range(len(keys))])
        return torch.sigmoid(logits).tolist()

    def score(self, items: Sequence[CriticInput]) -> list[float | None]:
        # An ORM judges complete solutions only; a PRM judges a latest step, which the root lacks.
        wanted = [
            i
            for i, item in enumerate(items)
            if (self.name != "orm" or item.terminal) and (self.name != "prm" or item.solution)
        ]
        scores = self.score_texts(
            [self.format_prompt(items[i].problem) for i in wanted], [items[i].solution for i in wanted]
        )
        out: list[float | None] = [None] * len(items)
        for i, score in zip(wanted, scores):
            out[i] = score
        return out


def load_critics(
    directories: Mapping[str, str | Path], *, task: Any, device: str | None = None
) -> dict[str, LearnedCritic]:
    """Saved critics by name. Critics whose backbones hold the same weights (the frozen-backbone
    critics of one policy) share that backbone in memory and one ``FeatureCache``: three critics
    of a 7B policy then cost one copy of it, and one pass over each node's text."""
    for name, directory in directories.items():
        # A name that is a kind (search --critic prm=DIR) must be the critic's own kind: a value critic
        # loaded as the PRM would score latest steps it was never trained on. Other names are labels.
        meta = read_meta(Path(directory))
        kind = meta["kind"]
        if name in KINDS and kind != name:
            article = "an" if kind == "orm" else "a"
            raise UserError(
                f"{directory}: {article} {kind} critic (its critic.json), given as the {name} critic"
            )
        check_critic_task(directory, task.name, meta)
    files = {name: _weights_files(Path(d) / "backbone") for name, d in directories.items()}
    sizes = {name: tuple((f.name, f.stat().st_size) for f in paths) for name, paths in files.items()}
    alike = Counter(size for size in sizes.values() if size)
    shared: dict[str, tuple[Any, FeatureCache]] = {}
    out: dict[str, LearnedCritic] = {}
    for name, directory in directories.items():
        # Only backbones with a same-sized twin can share: hash those (a 7B backbone is read once more).
        digest = files_digest(files[name]) if sizes[name] and alike[sizes[name]] > 1 else None
        backbone, cache = shared.get(digest, (None, None)) if digest else (None, None)
        model, tokenizer, _ = CriticModel.load(directory, device=device, backbone=backbone)
        if digest and backbone is None:
            cache = FeatureCache()
            shared[digest] = (model.backbone, cache)
        out[name] = LearnedCritic(model, tokenizer, task_format=task.format_prompt, cache=cache)
    return out


def _weights_files(backbone_dir: Path) -> list[Path]:
    """A saved backbone's config and weight files; none for a LoRA adapter (its weights live in its
    base, and its adapters differ by critic)."""
    if (backbone_dir / "adapter_config.json").is_file():
        return []
    weights = sorted(backbone_dir.glob("*.safetensors")) + sorted(backbone_dir.glob("*.bin"))
    config = backbone_dir / "config.json"
    return ([config] if config.is_file() else []) + weights if weights else []


def files_digest(files: Sequence[Path]) -> str:
    """A digest of the files' bytes, in the given order (equal digests: the same weights)."""
    digest = hashlib.blake2b(digest_size=16)
    for path in files:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
