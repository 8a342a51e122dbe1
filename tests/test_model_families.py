"""The transformers backend on model families whose set-up differs from the shipped Llamas: sliding
attention windows, end-of-turn tokens, tokenizers without EOS or pad, learned position tables, and
SentencePiece-style tokenizers. Every model is a tiny random one built here (no download)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.tiny_models import tiny_sizes

from alphallm.errors import UserError
from alphallm.lm.hf import TransformersLM, encode_pair, token_logprobs
from alphallm.lm.loading import load_causal_lm
from alphallm.lm.tokenizer import build_char_tokenizer
from alphallm.train.common import encode_pairs

STATE = "Q: 12+7*3-5\n7*3=21 -> 12+21-5\n"  # 31 characters: longer than the window below


def _direct_logprobs(model: Any, ids: list[int], tail: int) -> list[float]:
    tensor = torch.tensor([ids])
    return token_logprobs(model(input_ids=tensor).logits, tensor)[0, -tail:].tolist()


def test_a_sliding_window_model_searches_without_prefix_reuse_and_scores_as_a_forward_pass() -> None:
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    tokenizer = build_char_tokenizer()
    model = MistralForCausalLM(
        MistralConfig(**tiny_sizes(tokenizer, num_key_value_heads=2, sliding_window=8))
    ).eval()
    lm = TransformersLM(model, tokenizer)
    assert lm.prefix_store is None  # its cache keeps 8 positions; the store would read past them
    first = lm.sample([STATE], n=3, stop=("\n",), max_tokens=12, seed=0)[0]
    # Extending a sampled option is where prefix reuse crashed (IndexError in the stored KV).
    lm.sample([STATE + c.text for c in first], stop=("\n",), max_tokens=12, seed=1)
    [scored] = lm.logprobs([STATE], ["12+21=33\n"])
    ids = lm.encode(STATE + "12+21=33\n")
    assert scored == pytest.approx(_direct_logprobs(model, ids, len(scored)), abs=1e-5)


def _greedy(model: Any, tokenizer: Any, state: str) -> Any:
    return TransformersLM(model, tokenizer).sample([state], temperature=0.0, max_tokens=6)[0][0]


def test_generation_stops_at_the_generation_configs_end_of_turn_token() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = build_char_tokenizer()
    model = LlamaForCausalLM(LlamaConfig(**tiny_sizes(tokenizer))).eval()
    # A token the model writes first and greedily, other than its tokenizer's EOS, becomes its end of turn.
    firsts = {
        state: _greedy(model, tokenizer, state).token_ids[0] for state in (STATE, "Q: 1+2\n", "Answer:")
    }
    state, turn_end = next((s, t) for s, t in firsts.items() if t != tokenizer.eos_token_id)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, turn_end]
    ended = _greedy(model, tokenizer, state)
    assert (ended.token_ids, ended.finish_reason) == ([turn_end], "eos")


def test_a_tokenizer_without_eos_or_pad_still_pads_batches_and_trains() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = build_char_tokenizer()
    model = LlamaForCausalLM(LlamaConfig(**tiny_sizes(tokenizer))).eval()
    tokenizer.eos_token, tokenizer.pad_token = None, None
    model.generation_config.eos_token_id = None
    lm = TransformersLM(model, tokenizer)
    rows = lm.sample(["Q: 1+2\n", STATE], n=2, max_tokens=5, seed=0)  # two lengths: padding needed
    assert [len(c.token_ids) for row in rows for c in row] == [5, 5, 5, 5]
    batch = encode_pairs(tokenizer, ["Q: 1+2\n", STATE], ["1+2=3\n", "Answer: 28\n"])
    assert int(batch.completion_mask.sum()) == len("1+2=3\n") + len("Answer: 28\n")  # no EOS to add


def test_generation_stops_at_a_learned_position_table_and_a_longer_text_is_refused() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tokenizer = build_char_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=40, n_embd=32, n_layer=2, n_head=4)
    lm = TransformersLM(GPT2LMHeadModel(config).eval(), tokenizer)
    prompt_tokens = len(lm.encode(STATE))
    [[completion]] = lm.sample([STATE], max_tokens=50, seed=0)
    assert len(completion.token_ids) == 40 - prompt_tokens and completion.finish_reason == "length"
    with pytest.raises(UserError, match=r"does not fit the model's 40 positions"):
        lm.sample([STATE * 2], max_tokens=5)
    with pytest.raises(UserError, match=r"does not fit the model's 40 positions"):
        lm.logprobs([STATE], ["x" * 20])


def test_training_cuts_texts_to_a_learned_position_table() -> None:
    """SFT, DPO and critics cut their texts at their own max_length (512, 1024), which a model built
    for fewer positions cannot read: they crashed in torch.embedding. Now each stays within the model's."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from alphallm.critics.learned import CriticModel
    from alphallm.train.critic import CriticTrainConfig, train_critic
    from alphallm.train.critic_data import predict
    from alphallm.train.dpo import DPOConfig, Pair, dpo
    from alphallm.train.labels import LabelRow
    from alphallm.train.sft import SFTConfig, sft

    torch.manual_seed(0)
    tokenizer = build_char_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=40, n_embd=32, n_layer=2, n_head=4)
    long = STATE * 3  # 93 characters: more than 40 positions
    rows = [(STATE, long), ("Q: 1+2\n", "1+2=3\nAnswer: 3\n")] * 4
    assert (
        sft(GPT2LMHeadModel(config), tokenizer, rows, config=SFTConfig(epochs=1, batch_size=4))["steps"] > 0
    )
    pairs = [Pair(STATE, long, "Answer: 1\n"), Pair("Q: 1+2\n", "Answer: 3\n", long)] * 2
    assert dpo(GPT2LMHeadModel(config), None, tokenizer, pairs, config=DPOConfig(epochs=1, batch_size=2))
    labels = [
        LabelRow(STATE, long if i % 2 else "Answer: 1\n", float(i % 2), group=str(i)) for i in range(16)
    ]
    critic, _ = train_critic(
        labels,
        base=GPT2LMHeadModel(config),
        tokenizer=tokenizer,
        kind="orm",
        config=CriticTrainConfig(epochs=1, batch_size=8, holdout=0.25),
    )
    assert isinstance(critic, CriticModel) and critic.max_length == 40
    assert len(predict(critic, tokenizer, labels)) == 16


def _metaspace_tokenizer() -> Any:
    """A Llama-2 / Mistral style tokenizer: BPE over SentencePiece's word-boundary piece."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    # A newline is its own piece, as SentencePiece's byte fallback makes it (<0x0A>).
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", "isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
        ]
    )
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    corpus = [
        f"Q: {a}+{b}*3\n{b}*3={b * 3} -> {a}+{b * 3}\nAnswer: {a + b * 3}\n"
        for a in range(30)
        for b in range(9)
    ]
    core.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"])
    )
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def test_a_continuation_is_tokenised_as_the_model_reads_it_after_its_prompt() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _metaspace_tokenizer()
    prompt, continuation = "Q: 12+7*3\n", "7*3=21 -> 12+21\n"
    apart = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(apart[:1])[0].startswith("▁")  # the piece the old split added
    prompt_ids, continuation_ids = encode_pair(tokenizer, prompt, continuation)
    assert prompt_ids + continuation_ids == tokenizer(prompt + continuation)["input_ids"]
    assert continuation_ids != apart and tokenizer.decode(continuation_ids) == continuation

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**tiny_sizes(tokenizer))).eval()
    [scored] = TransformersLM(model, tokenizer).logprobs([prompt], [continuation])
    assert scored == pytest.approx(
        _direct_logprobs(model, prompt_ids + continuation_ids, len(continuation_ids))
    )
    batch = encode_pairs(tokenizer, [prompt], [continuation])
    learned = batch.input_ids[0][batch.completion_mask[0].bool()].tolist()
    assert learned == [*continuation_ids, tokenizer.eos_token_id]


def test_models_that_cannot_load_say_so_in_one_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    bare = tmp_path / "no-tokenizer"  # for GPT-2, AutoTokenizer quietly builds an empty tokenizer here
    GPT2LMHeadModel(
        GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    ).save_pretrained(bare)
    with pytest.raises(UserError, match=r"no-tokenizer: no usable tokenizer"):
        load_causal_lm(bare)
    unknown = tmp_path / "unknown-type"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    with pytest.raises(UserError, match=r"unknown-type: could not load model"):
        load_causal_lm(unknown)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for path in tiny_model_dir.iterdir():
        (corrupt / path.name).write_bytes(
            path.read_bytes()[:100] if path.suffix == ".safetensors" else path.read_bytes()
        )
    with pytest.raises(UserError, match=r"corrupt: could not load model \(SafetensorError: "):
        load_causal_lm(corrupt)
    with pytest.raises(UserError, match=r"config.json: a file, not a model directory"):
        load_causal_lm(tiny_model_dir / "config.json")
    # A config that does not describe the weights beside it is refused before transformers builds what
    # it describes (for a bare {"model_type": "llama"}, 6.7 B parameters: a process killed for memory).
    wider = tmp_path / "wider"
    shutil.copytree(tiny_model_dir, wider)
    config = json.loads((wider / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps({**config, "hidden_size": 2 * config["hidden_size"]}))
    embedding = [config["vocab_size"], config["hidden_size"]]
    with pytest.raises(
        UserError,
        match=re.escape(
            f"wider: config.json does not describe the saved weights (model.embed_tokens.weight is "
            f"{[embedding[0], 2 * embedding[1]]} by the config, {embedding} in model.safetensors)"
        ),
    ):
        load_causal_lm(wider)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match=r"device 'cuda': this torch has no CUDA device"):
            load_causal_lm(tiny_model_dir, device="cuda")
    if not torch.backends.mps.is_available():  # a traceback from the first tensor moved there, before
        with pytest.raises(UserError, match=r"device 'mps': this torch has no MPS device"):
            load_causal_lm(tiny_model_dir, device="mps")
    with pytest.raises(UserError, match=r"device 'meta' holds no data"):
        load_causal_lm(tiny_model_dir, device="meta")
    if not torch.xpu.is_available():
        with pytest.raises(UserError, match=r"device 'xpu': not available here \(.+\); use cpu or auto"):
            load_causal_lm(tiny_model_dir, device="xpu")
