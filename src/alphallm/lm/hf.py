"""The Hugging Face ``transformers`` backend: any ``AutoModelForCausalLM``, tiny or real.

Sampling is a hand-written decode loop rather than ``generate()`` so that each row can stop on its
own stop string, report per-token log-probs and leave the batch as soon as it is done (finished
rows are dropped from the KV cache instead of being padded along). States are left-padded; each
state's prompt is encoded once and its KV cache is repeated for its ``n`` samples.

Chat templates are applied to the task's prompt, not here in ``encode``: a state is prompt + the
solution so far, and only the prompt is the user's message (``loading.with_chat_template``).
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
from alphallm.lm.base import Completion, Usage, sample_counts
from alphallm.lm.batches import sample_batches
from alphallm.lm.loading import load_causal_lm
from alphallm.lm.prefix_cache import PrefixStore, stack_entries

__all__ = [
    "TransformersLM",
    "encode_batch",
    "encode_pair",
    "end_ids",
    "fitting_length",
    "has_sliding_window",
    "output_logits",
    "pad_id",
    "position_limit",
    "token_logprobs",
]


log = logging.getLogger(__name__)


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, T-1): log p(token t+1 | tokens up to t) from logits (B, T, V) over ``input_ids`` (B, T)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def output_logits(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """(B, T, V): what ``model(...).logits`` returns, from its last hidden states (B, T, H).

    Some causal LMs change the output embedding's logits in their ``forward`` (transformers'
    modeling files): read without that, Granite's token log-probs were off by up to 0.23 and
    Cohere's by 0.28."""
    logits = model.get_output_embeddings()(hidden)
    config = model.config.get_text_config()
    family = str(getattr(config, "model_type", ""))
    if (scaling := getattr(config, "logits_scaling", None)) is not None:
        # muP: Granite (and MiniCPM3) divide by it; HyperCLOVA X multiplies.
        logits = logits * scaling if family.startswith("hyperclovax") else logits / scaling
    if (scale := getattr(config, "logit_scale", None)) is not None and family.startswith("cohere"):
        logits = logits * scale  # MPT's config has a logit_scale too, which its model ignores
    if (multiplier := getattr(config, "lm_head_multiplier", None)) is not None:  # Falcon-H1
        logits = logits * multiplier
    if (cap := getattr(config, "final_logit_softcapping", None)) is not None:  # Gemma 2 and 3
        logits = torch.tanh(logits / cap) * cap
    return logits


def encode_pair(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """Token ids of ``prompt`` and of ``completion`` after it, as the tokenizer reads them together.

    Tokenised apart, a SentencePiece tokenizer (Llama-2, Mistral) starts the completion with a
    word-boundary piece ('▁') that the model never sees after the prompt, so its log-probs and
    training targets would be those of a sequence the backend never samples. A token that spans
    the boundary goes to the completion.
    """
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    whole = list(tokenizer(prompt + completion)["input_ids"])
    shared = 0
    for a, b in zip(prompt_ids, whole):
        if a != b:
            break
        shared += 1
    return whole[:shared], whole[shared:]


def position_limit(config: Any) -> int | None:
    """The most positions the model was built for (``max_position_embeddings``, GPT-2's
    ``n_positions``), or None when its config names none."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def fitting_length(model: Any, max_length: int) -> int:
    """``max_length``, or the model's position limit where that is smaller: a training text cut to it
    still fits the model (a GPT-2 style position table crashes past its last row)."""
    limit = position_limit(getattr(model, "config", None))
    return min(max_length, limit) if limit is not None else max_length


def encode_batch(
    tokenizer: Any,
    prompts: Sequence[str],
    solutions: Sequence[str],
    device: torch.device,
    max_length: int,
) -> dict:
    """Left-padded ids, attention mask and solution mask of prompt + solution texts, as critics read
    them (the last column is every text's last token; a text longer than ``max_length`` loses its
    start)."""
    encoded, starts = [], []
    for prompt, solution in zip(prompts, solutions):
        head, tail = encode_pair(tokenizer, prompt, solution)  # the split the backend and trainers use
        full, start = head + tail, len(head) if solution else len(head) + len(tail)
        cut = max(0, len(full) - max_length)
        encoded.append(full[cut:])
        starts.append(max(0, start - cut))
    width = max(len(e) for e in encoded)
    pad = pad_id(tokenizer)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    solution_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, (seq, start) in enumerate(zip(encoded, starts)):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
        solution_mask[row, width - len(seq) + start :] = 1
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "solution_mask": solution_mask.to(device),
    }


def end_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Every token id that ends a generation: the tokenizer's EOS and the generation config's (a
    chat model's end-of-turn token, e.g. Llama-3's ``<|eot_id|>`` or Gemma's ``<end_of_turn>``)."""
    ids: set[int] = set()
    for source in (
        tokenizer.eos_token_id,
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
    ):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(i) for i in source)
    return frozenset(ids)


def pad_id(tokenizer: Any) -> int:
    """The id that pads a batch: the tokenizer's pad, else its EOS, else 0 (padding is masked out,
    so any id will do when the tokenizer names none)."""
    return next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)


def has_sliding_window(config: Any) -> bool:
    """Whether any attention layer sees only a window of recent positions (Mistral, Gemma-2/3,
    Phi-3): its KV cache then keeps only that window, which the prefix store cannot reuse."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return any("sliding" in str(kind) for kind in layer_types)
    return (
        bool(getattr(config, "sliding_window", None))
        and getattr(config, "use_sliding_window", True) is not False
    )


class TransformersLM:
    """A batched sampler and scorer over a ``transformers`` causal LM.

    Args:
        model: a loaded causal LM (in eval mode).
        tokenizer: its tokenizer.
        max_batch_rows: the most sequences decoded at once; larger batches are split.
        prefix_cache_bytes: memory for KV reuse across calls (0 turns prefix reuse off).
    """

    def __init__(
        self, model: Any, tokenizer: Any, *, max_batch_rows: int = 256, prefix_cache_bytes: int = 2 << 30
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_rows = max_batch_rows
        self.usage = Usage()
        self.device = next(model.parameters()).device
        self.end_ids = end_ids(model, tokenizer)
        self.pad_id = pad_id(tokenizer)
        self.max_positions = position_limit(model.config)
        params = inspect.signature(model.forward).parameters
        # transformers 5 renamed past_key_values -> cache; support both.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keep_arg = "logits_to_keep" if "logits_to_keep" in params else None
        self._encode_cache: OrderedDict[str, list[int]] = OrderedDict()
        reusable = prefix_cache_bytes > 0 and not has_sliding_window(model.config)
        self.prefix_store = PrefixStore(prefix_cache_bytes) if reusable else None
        self._pieces: list[str] | None = None

    @classmethod
    def from_pretrained(
        cls, name: str | Path, *, device: str | None = None, dtype: str | None = None, **kwargs: Any
    ) -> TransformersLM:
        model, tokenizer = load_causal_lm(name, device=device, dtype=dtype)
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
        n: int | Sequence[int] = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        max_tokens: int = 64,
        seed: int | None = None,
    ) -> list[list[Completion]]:
        counts = sample_counts(states, n, max_tokens)
        self.usage.calls += 1
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed if seed is not None else torch.seed() % (1 << 62))
        out: list[list[Completion]] = [[] for _ in states]
        for batch in sample_batches(counts, self.max_batch_rows):
            prompts = [self.encode(states[i]) for i, _ in batch]
            flat = self._decode(
                prompts,
                [count for _, count in batch],
                temperature,
                top_p,
                tuple(stop),
                self._fitting(max(len(p) for p in prompts), max_tokens),
                generator,
            )
            offset = 0
            for i, count in batch:
                out[i].extend(flat[offset : offset + count])
                offset += count
        return out

    def _check_fits(self, tokens: int) -> None:
        if self.max_positions is not None and tokens > self.max_positions:
            raise UserError(
                f"a text of {tokens} tokens does not fit the model's {self.max_positions} positions "
                "(max_position_embeddings)"
            )

    def _fitting(self, prompt_tokens: int, max_tokens: int) -> int:
        """``max_tokens``, cut so that no row runs past the model's positions (it then ends with
        finish reason "length"); a prompt with no room left is an error."""
        self._check_fits(prompt_tokens + 1)
        if self.max_positions is None:
            return max_tokens
        return min(max_tokens, self.max_positions - prompt_tokens)

    def _prefill(self, prompts: list[list[int]]) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """Encodes the prompts, starting each from the longest stored prefix of its tokens.

        Row layout: [padding | stored KV | padding | new tokens]; padding is masked out and
        positions come from the mask, so each row sees exactly its own tokens at their positions.
        Returns last-position logits (R, V), the KV cache and the attention mask (R, S).
        """
        found = [
            self.prefix_store.longest_prefix(p, max_len=len(p) - 1) if self.prefix_store else None
            for p in prompts
        ]
        reused = [len(e.ids) if e else 0 for e in found]
        cached_width = max(reused)
        cache = None
        cached_mask = torch.zeros((len(prompts), cached_width), dtype=torch.long, device=self.device)
        if cached_width:
            cache = stack_entries(found, cached_width)
            for row, length in enumerate(reused):
                cached_mask[row, cached_width - length :] = 1
        ids, new_mask = self._left_pad([p[r:] for p, r in zip(prompts, reused)])
        self.usage.prefill_tokens += sum(len(p) - r for p, r in zip(prompts, reused))
        mask = torch.cat([cached_mask, new_mask], dim=1)
        logits, cache = self._forward(ids, mask, cache, keep_last=True)
        return logits, cache, mask

    def _store_row(self, cache: Any, batch_row: int, mask_row: torch.Tensor, ids: list[int]) -> None:
        """Keeps one row's KV (its unmasked positions) under its token ids."""
        if self.prefix_store is None:
            return
        valid = mask_row.nonzero().squeeze(1)
        if any(layer.keys.shape[-2] != mask_row.shape[0] for layer in cache.layers):
            # A cache that keeps fewer positions than the mask (a sliding window that
            # has_sliding_window did not see) cannot be stored: stop reusing prefixes.
            log.warning("prefix store: the KV cache keeps fewer positions than the text; reuse off")
            self.prefix_store = None
            return
        if valid.numel() != len(ids):  # never expected; a mismatch would poison the store
            log.warning(
                "prefix store: %d cached positions for %d tokens; not stored", valid.numel(), len(ids)
            )
            return
        # Indexing with a tensor of positions copies, so the stored KV owns its memory already.
        layers = [
            (layer.keys[batch_row][:, valid], layer.values[batch_row][:, valid]) for layer in cache.layers
        ]
        self.prefix_store.put(ids, layers)

    def _decode(
        self,
        prompts: list[list[int]],
        counts: list[int],
        temperature: float,
        top_p: float,
        stop: tuple[str, ...],
        max_tokens: int,
        generator: torch.Generator,
    ) -> list[Completion]:
        from alphallm.lm.kv_room import ROOM, make_room

        logits, cache, mask = self._prefill(prompts)
        # Decoded tokens are written into room left in the cache, not appended by copying it all.
        make_room(cache, min(max_tokens, ROOM))
        # Each prompt is encoded once; its KV cache is shared by its samples.
        source = torch.repeat_interleave(torch.arange(len(prompts)), torch.tensor(counts)).to(self.device)
        if len(source) != len(prompts) or bool(
            (source != torch.arange(len(prompts), device=self.device)).any()
        ):
            cache.batch_select_indices(source)
            logits, mask = logits[source], mask[source]
        prompt_of = source.tolist()
        rows = len(prompt_of)
        tokens: list[list[int]] = [[] for _ in range(rows)]
        logps: list[list[float]] = [[] for _ in range(rows)]
        tails = [""] * rows  # recent decoded text, for stop-string detection
        finish = ["length"] * rows
        active = list(range(rows))  # original row of each batch row
        pieces = self._piece_table() if stop else None
        longest_stop = max((len(s) for s in stop), default=0)
        for step in range(max_tokens):
            chosen, chosen_logp = self._pick(logits, temperature, top_p, generator)
            keep: list[int] = []
            for b, (row, token, lp) in enumerate(zip(active, chosen.tolist(), chosen_logp.tolist())):
                tokens[row].append(token)
                logps[row].append(lp)
                if pieces is not None:
                    tails[row] = (tails[row] + pieces[token])[-(longest_stop + 16) :]
                if token in self.end_ids:
                    finish[row] = "eos"
                elif pieces is not None and any(s in tails[row] for s in stop):
                    finish[row] = "stop"
                elif step < max_tokens - 1:
                    keep.append(b)
                    continue
                if finish[row] == "stop":  # an option that ended at a stop string is a state to extend
                    self._store_row(cache, b, mask[b], prompts[prompt_of[row]] + tokens[row][:-1])
            self.usage.generated_tokens += len(chosen)
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, chosen = mask[index], chosen[index]
                active = [active[b] for b in keep]
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
        return self._score_pairs([encode_pair(self.tokenizer, s, c) for s, c in zip(states, continuations)])

    @torch.no_grad()
    def echo(self, texts: Sequence[str]) -> list[tuple[list[int], list[float | None]]]:
        """Each text's token ids and each token's log-prob given the ones before it (None for the
        first, which has no context): what an OpenAI-style server returns for ``echo`` (``lm/server.py``)."""
        self.usage.calls += 1
        encoded = [self.encode(t) for t in texts]
        scored = iter(self._score_pairs([(ids[:1], ids[1:]) for ids in encoded if ids]))
        return [(ids, [None, *next(scored)]) if ids else ([], []) for ids in encoded]

    def _score_pairs(self, pairs: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        """Each continuation's token log-probs after its prompt, in batches of ``max_batch_rows``."""
        for prompt, continuation in pairs:
            self._check_fits(len(prompt) + len(continuation))
        out: list[list[float]] = []
        for start in range(0, len(pairs), self.max_batch_rows):
            out.extend(self._score(pairs[start : start + self.max_batch_rows]))
        return out

    def piece(self, token_id: int) -> str:
        """A token's text as decoded alone."""
        return self._piece_table()[token_id] if 0 <= token_id < len(self._piece_table()) else ""

    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        ids, mask = self._left_pad([p + c for p, c in pairs])
        self.usage.prefill_tokens += int(mask.sum())
        self.usage.forward_passes += 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
        logp = token_logprobs(logits, ids)
        width = ids.shape[1]
        return [logp[row, width - 1 - len(c) :].tolist() if c else [] for row, (_, c) in enumerate(pairs)]
