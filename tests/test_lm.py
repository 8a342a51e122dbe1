from __future__ import annotations

from pathlib import Path

import pytest

from alphallm.errors import UserError
from alphallm.lm import load_lm
from alphallm.lm.hf import TransformersLM

STATES = ["Q: 1+2\n", "Q: 33*4-5 and a longer prompt\n", "x"]


@pytest.fixture(scope="module")
def lm(tiny_model_dir: Path) -> TransformersLM:
    model = load_lm(str(tiny_model_dir))
    assert isinstance(model, TransformersLM)
    return model


def test_sample_shapes_stops_and_usage(lm: TransformersLM) -> None:
    before = lm.usage.copy()
    out = lm.sample(STATES, n=4, temperature=1.0, stop=["\n"], max_tokens=12, seed=1)
    assert [len(row) for row in out] == [4, 4, 4]
    for row in out:
        for c in row:
            assert len(c.logprobs) == len(c.token_ids) <= 12
            assert all(lp <= 0 for lp in c.logprobs)
            if c.finish_reason == "stop":
                assert c.text.endswith("\n") and "\n" not in c.text[:-1]
            elif c.finish_reason == "length":
                assert c.num_tokens == 12
    used = lm.usage.since(before)
    assert used.calls == 1
    assert used.prefill_tokens == sum(len(lm.encode(s)) for s in STATES)  # each prompt encoded once for n=4
    assert used.generated_tokens == sum(c.num_tokens for row in out for c in row)


def test_sampling_is_seeded(lm: TransformersLM) -> None:
    first = lm.sample(STATES, n=3, temperature=1.0, max_tokens=10, seed=7)
    again = lm.sample(STATES, n=3, temperature=1.0, max_tokens=10, seed=7)
    other = lm.sample(STATES, n=3, temperature=1.0, max_tokens=10, seed=8)
    texts = lambda out: [c.token_ids for row in out for c in row]  # noqa: E731 - a local shorthand
    assert texts(first) == texts(again)
    assert texts(first) != texts(other)


def test_greedy_batched_equals_one_by_one(lm: TransformersLM) -> None:
    batched = lm.sample(STATES, n=2, temperature=0.0, max_tokens=15)
    for state, row in zip(STATES, batched):
        alone = lm.sample([state], temperature=0.0, max_tokens=15)[0][0]
        assert row[0].token_ids == alone.token_ids == row[1].token_ids
        assert row[0].logprobs == pytest.approx(alone.logprobs, abs=1e-4)


def test_logprobs_match_sampling(lm: TransformersLM) -> None:
    out = lm.sample(STATES, n=1, temperature=1.0, stop=["\n"], max_tokens=8, seed=3)
    # Scoring text needs it to round-trip through the tokenizer; skip rows that sampled special tokens.
    rows = [
        (s, row[0]) for s, row in zip(STATES, out) if lm.encode_continuation(row[0].text) == row[0].token_ids
    ]
    assert rows
    scored = lm.logprobs([s for s, _ in rows], [c.text for _, c in rows])
    for (_, completion), values in zip(rows, scored):
        assert values == pytest.approx(completion.logprobs, abs=1e-4)


def test_missing_model_is_a_one_line_error(tmp_path: Path) -> None:
    # The error names the shipped models one could have meant, by their names.
    shipped = r"\(shipped models: arith-base, game24-base\)"
    with pytest.raises(UserError, match=f"no such model directory {shipped}"):
        load_lm(str(tmp_path / "nope"))
    with pytest.raises(UserError, match=r"no config\.json"):
        load_lm(str(tmp_path))


def test_prefix_reuse_changes_nothing_but_the_prefill(tiny_model_dir: Path) -> None:
    with_cache = load_lm(str(tiny_model_dir))
    without = TransformersLM(with_cache.model, with_cache.tokenizer, prefix_cache_bytes=0)
    states = ["Q: 1+2\n", "Q: 7*8-3\n"]
    for _ in range(3):  # grow each state by its greedy option, as a search path does
        a = with_cache.sample(states, n=[2, 1], temperature=0.0, stop=["\n"], max_tokens=6)
        b = without.sample(states, n=[2, 1], temperature=0.0, stop=["\n"], max_tokens=6)
        assert [[c.token_ids for c in row] for row in a] == [[c.token_ids for c in row] for row in b]
        for row_a, row_b in zip(a, b):
            for ca, cb in zip(row_a, row_b):
                assert ca.logprobs == pytest.approx(cb.logprobs, abs=1e-4)
        grown = [row[0].text if row[0].finish_reason == "stop" else "x\n" for row in a]
        states = [s + g for s, g in zip(states, grown)]
    assert with_cache.prefix_store is not None and with_cache.prefix_store.hits > 0
    assert with_cache.usage.prefill_tokens < without.usage.prefill_tokens


def test_per_state_sample_counts(lm: TransformersLM) -> None:
    out = lm.sample(STATES, n=[1, 3, 2], temperature=1.0, max_tokens=5, seed=0)
    assert [len(row) for row in out] == [1, 3, 2]
    with pytest.raises(ValueError):
        lm.sample(STATES, n=[1, 2], max_tokens=5)


def test_sample_batches_keep_a_states_samples_together_where_they_fit() -> None:
    from alphallm.lm.batches import sample_batches

    assert sample_batches([2, 1, 1, 3], 4) == [[(0, 2), (1, 1), (2, 1)], [(3, 3)]]
    assert sample_batches([9, 1, 6], 4) == [[(0, 4)], [(0, 4)], [(0, 1), (1, 1)], [(2, 4)], [(2, 2)]]
    assert sample_batches([], 4) == []


def test_a_state_with_more_samples_than_a_batch_holds_is_decoded_in_pieces(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """n beyond ``max_batch_rows`` (a client of ``alphallm serve`` asked for n=100000, and the server
    took 9 GB in one batch) is decoded a batch at a time, each sample from its own state."""
    model = load_lm(str(tiny_model_dir))
    assert isinstance(model, TransformersLM)
    model.max_batch_rows = 4
    batches: list[int] = []
    decode = model._decode

    def counted(prompts: list[list[int]], counts: list[int], *args: object) -> object:
        batches.append(sum(counts))
        return decode(prompts, counts, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(model, "_decode", counted)
    out = model.sample(STATES, n=[9, 1, 6], temperature=1.0, stop=["\n"], max_tokens=6, seed=0)
    assert [len(row) for row in out] == [9, 1, 6]
    assert max(batches) <= 4 and sum(batches) == 16
    greedy = model.sample(STATES, n=[9, 1, 6], temperature=0.0, max_tokens=6)
    alone = [model.sample([state], temperature=0.0, max_tokens=6)[0][0].text for state in STATES]
    assert [{c.text for c in row} for row in greedy] == [{text} for text in alone]


def test_a_layer_with_room_holds_what_a_dynamic_layer_holds_through_every_operation() -> None:
    import torch
    from transformers.cache_utils import DynamicLayer

    from alphallm.lm.kv_room import RoomyLayer

    torch.manual_seed(0)
    plain = DynamicLayer()
    plain.update(torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4))
    roomy = RoomyLayer(plain, room=8)
    plain.update(torch.zeros(3, 2, 0, 4), torch.zeros(3, 2, 0, 4))  # a no-op that makes plain's own copy

    def both(operation: str, *args: object) -> None:
        for layer in (plain, roomy):
            getattr(layer, operation)(*args)
        assert torch.equal(plain.keys, roomy.keys) and torch.equal(plain.values, roomy.values)
        assert plain.get_seq_length() == roomy.get_seq_length()

    for _ in range(20):  # one token at a time, past the room twice: the buffers grow
        both("update", torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4))
    both("batch_select_indices", torch.tensor([0, 2]))
    both("update", torch.randn(2, 2, 11, 4), torch.randn(2, 2, 11, 4))  # more than the room at once
    both("crop", -3)
    both("update", torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4))  # over the cropped positions
    both("batch_repeat_interleave", 2)
    both("reorder_cache", torch.tensor([3, 0, 1]))
    both("update", torch.randn(3, 2, 2, 4), torch.randn(3, 2, 2, 4))
    assert roomy.get_seq_length() == 5 + 20 + 11 - 3 + 1 + 2
    fresh = torch.randn(3, 2, 1, 4)
    roomy.reset()  # empty again: the next update starts at position 0
    assert roomy.get_seq_length() == 0 and torch.equal(roomy.update(fresh, fresh)[0], fresh)

    # make_room swaps filled plain layers only, and leaves a cache without layers (legacy tuples) alone.
    from transformers import DynamicCache

    from alphallm.lm.kv_room import make_room

    cache = DynamicCache()
    cache.update(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), 0)
    cache.layers.append(DynamicLayer())
    make_room(cache, 8)
    assert [type(layer) for layer in cache.layers] == [RoomyLayer, DynamicLayer]
    make_room(((torch.zeros(1), torch.zeros(1)),), 8)


def test_decoding_into_the_caches_room_changes_no_token_or_log_prob(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import alphallm.lm.kv_room

    def run() -> list[list[tuple[list[int], list[float], str]]]:
        model = load_lm(str(tiny_model_dir))
        out = []
        states = ["Q: 1+2\n", "Q: 33*4-5 and a longer prompt\n"]
        for seed in range(3):  # the second and third calls start from stored prefixes
            rows = model.sample(states, n=[3, 2], temperature=1.0, stop=["\n", "7"], max_tokens=70, seed=seed)
            out += [[(c.token_ids, c.logprobs, c.finish_reason) for c in row] for row in rows]
            states = [s + row[0].text for s, row in zip(states, rows)]
        return out

    with_room = run()
    finishes = [c[2] for row in with_room for c in row]
    # rows left the batch at different steps, and some decoded past two rooms' worth of tokens
    assert "stop" in finishes and "length" in finishes and alphallm.lm.kv_room.ROOM * 2 < 70
    monkeypatch.setattr(alphallm.lm.kv_room, "make_room", lambda cache, room: None)
    assert run() == with_room
