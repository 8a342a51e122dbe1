"""The Hugging Face ``transformers`` backend: any ``AutoModelForCausalLM``, tiny or real.

Sampling is a hand-written decode loop rather than ``generate()`` so that each row can stop on its
own stop string, report per-token log-probs and leave the batch as soon as it is done (finished
rows are dropped from the KV cache instead of being padded along). States are left-padded; each
state's prompt is encoded once and its KV cache is repeated for its ``n`` samples.
"""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from alphallm.errors import UserError
from alphallm.lm.base import Completion, Usage

__all__ = ["TransformersLM", "pick_device", "resolve_model_path"]

log = logging.getLogger(__name__)

SHIPPED_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def resolve_model_path(name: str | Path) -> str:
    """A shipped model name (``arith-base``), a local directory, or a hub id, in that order."""
    name = str(name)
    shipped = SHIPPED_MODELS_DIR / name
    if (shipped / "config.json").is_file():
        return str(shipped)
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise UserError(f"{name}: not a model directory (no config.json)")
        return str(local)
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        shipped_names = sorted(p.name for p in SHIPPED_MODELS_DIR.glob("*/config.json"))
        raise UserError(
            f"{name}: no such model directory (shipped models: {', '.join(shipped_names) or 'none'})"
        )
    return name


def pick_device(device: str | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when present, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 matmuls are slow and lossy there); bf16 on GPUs that support it."""
    if dtype not in (None, "auto"):
        return getattr(torch, str(dtype))
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class TransformersLM:
    """A batched sampler and scorer over a ``transformers`` causal LM.

    Args:
        model: a loaded causal LM (in eval mode).
        tokenizer: its tokenizer.
        max_batch_rows: the most sequences decoded at once; larger batches are split.
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_rows: int = 256) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_rows = max_batch_rows
        self.usage = Usage()
        self.device = next(model.parameters()).device
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        params = inspect.signature(model.forward).parameters
        # transformers 5 renamed past_key_values -> cache; support both.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keep_arg = "logits_to_keep" if "logits_to_keep" in params else None
        self._encode_cache: OrderedDict[str, list[int]] = OrderedDict()
        self._pieces: list[str] | None = None

    @classmethod
    def from_pretrained(
        cls, name: str | Path, *, device: str | None = None, dtype: str | None = None, **kwargs: Any
    ) -> TransformersLM:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_model_path(name)
        target = pick_device(device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(dtype, target))
        except OSError as exc:
            raise UserError(f"{name}: could not load model ({str(exc).splitlines()[0]})") from None
        model.to(target)  # type: ignore[arg-type]  # transformers' stubs type .to() oddly
        return cls(model, tokenizer, **kwargs)

    # -- tokens ---------------------------------------------------------------------------------
    def encode(self, state: str) -> list[int]:
        """Token ids of a state, special tokens (BOS) included as the tokenizer adds them. Cached."""
        ids = self._encode_cache.get(state)
        if ids is None:
            ids = list(self.tokenizer(state)["input_ids"])
            self._encode_cache[state] = ids
            if len(self._encode_cache) > 50_000:
                self._encode_cache.popitem(last=False)
        else:
            self._encode_cache.move_to_end(state)
        return ids

    def encode_continuation(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _piece_table(self) -> list[str]:
        if self._pieces is None:
            self._pieces = [self.tokenizer.decode([i]) for i in range(len(self.tokenizer))]
        return self._pieces

    # -- forward --------------------------------------------------------------------------------
    def _forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache: Any, keep_last: bool
    ) -> Any:
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": None,
            "use_cache": True,
            self._cache_arg: cache,
        }
        positions = attention_mask.long().cumsum(-1) - 1
        kwargs["position_ids"] = positions[:, -input_ids.shape[1] :].clamp(min=0)
        if keep_last and self._keep_arg:
            kwargs[self._keep_arg] = 1
        self.usage.forward_passes += 1
        out = self.model(**kwargs)
        new_cache = getattr(out, "cache", None)
        if new_cache is None:
            new_cache = getattr(out, "past_key_values", None)
        return out.logits[:, -1, :].float(), new_cache

    def _left_pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- sampling -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        states: Sequence[str],
        *,
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        max_tokens: int = 64,
        seed: int | None = None,
    ) -> list[list[Completion]]:
        if n < 1 or max_tokens < 1:
            raise ValueError("n and max_tokens must be at least 1")
        self.usage.calls += 1
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed if seed is not None else torch.seed() % (1 << 62))
        per_chunk = max(1, self.max_batch_rows // n)
        out: list[list[Completion]] = []
        for start in range(0, len(states), per_chunk):
            chunk = [self.encode(s) for s in states[start : start + per_chunk]]
            flat = self._decode(chunk, n, temperature, top_p, tuple(stop), max_tokens, generator)
            out.extend(flat[i * n : (i + 1) * n] for i in range(len(chunk)))
        return out

    def _decode(
        self,
        prompts: list[list[int]],
        n: int,
        temperature: float,
        top_p: float,
        stop: tuple[str, ...],
        max_tokens: int,
        generator: torch.Generator,
    ) -> list[Completion]:
        ids, mask = self._left_pad(prompts)
        self.usage.prefill_tokens += sum(len(p) for p in prompts)
        logits, cache = self._forward(ids, mask, None, keep_last=True)
        if n > 1:  # each prompt is encoded once; its cache is shared by its n samples
            cache.batch_repeat_interleave(n)
            logits, mask = logits.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
        rows = len(prompts) * n
        tokens: list[list[int]] = [[] for _ in range(rows)]
        logps: list[list[float]] = [[] for _ in range(rows)]
        tails = [""] * rows  # recent decoded text, for stop-string detection
        finish = ["length"] * rows
        active = torch.arange(rows, device=self.device)  # original row of each batch row
        pieces = self._piece_table() if stop else None
        longest_stop = max((len(s) for s in stop), default=0)
        for step in range(max_tokens):
            chosen, chosen_logp = self._pick(logits, temperature, top_p, generator)
            keep: list[int] = []
            for b, (row, token, lp) in enumerate(zip(active.tolist(), chosen.tolist(), chosen_logp.tolist())):
                tokens[row].append(token)
                logps[row].append(lp)
                if token == self.eos_id:
                    finish[row] = "eos"
                    continue
                if pieces is not None:
                    tails[row] = (tails[row] + pieces[token])[-(longest_stop + 16) :]
                    if any(s in tails[row] for s in stop):
                        finish[row] = "stop"
                        continue
                keep.append(b)
            self.usage.generated_tokens += len(chosen)
            if not keep or step == max_tokens - 1:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                active, mask, chosen = active[index], mask[index], chosen[index]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            logits, cache = self._forward(chosen.unsqueeze(1), mask, cache, keep_last=True)
        return [self._completion(tokens[r], logps[r], finish[r], stop) for r in range(rows)]

    def _pick(
        self, logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples one token per row; returns it and its log-prob at temperature 1.  # logits (R, V)"""
        logp = torch.log_softmax(logits, dim=-1)
        if temperature <= 0:
            chosen = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            if top_p < 1.0:
                sorted_probs, order = probs.sort(dim=-1, descending=True)
                outside = sorted_probs.cumsum(-1) - sorted_probs > top_p
                sorted_probs[outside] = 0.0
                probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
            chosen = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return chosen, logp.gather(-1, chosen.unsqueeze(1)).squeeze(1)

    def _completion(
        self, token_ids: list[int], logps: list[float], finish: str, stop: tuple[str, ...]
    ) -> Completion:
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        if finish == "stop":  # cut right after the first stop string (a BPE token may run past it)
            ends = [text.find(s) + len(s) for s in stop if s in text]
            if ends:
                text = text[: min(ends)]
        return Completion(text=text, token_ids=token_ids, logprobs=logps, finish_reason=finish)

    # -- scoring --------------------------------------------------------------------------------
    @torch.no_grad()
    def logprobs(self, states: Sequence[str], continuations: Sequence[str]) -> list[list[float]]:
        if len(states) != len(continuations):
            raise ValueError("states and continuations must have the same length")
        self.usage.calls += 1
        pairs = [(self.encode(s), self.encode_continuation(c)) for s, c in zip(states, continuations)]
        out: list[list[float]] = []
        for start in range(0, len(pairs), self.max_batch_rows):
            out.extend(self._score(pairs[start : start + self.max_batch_rows]))
        return out

    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        ids, mask = self._left_pad([p + c for p, c in pairs])
        self.usage.prefill_tokens += int(mask.sum())
        self.usage.forward_passes += 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
        logp = (
            torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        )  # (B, T-1)
        width = ids.shape[1]
        return [logp[row, width - 1 - len(c) :].tolist() if c else [] for row, (_, c) in enumerate(pairs)]
