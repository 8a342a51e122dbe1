from __future__ import annotations

import copy
from typing import Any

from alphallm.train.data import dpo_pairs, sft_rows
from alphallm.train.labels import complete_solutions
from test_labels import _tree as _labels_tree


def _tree() -> dict[str, Any]:
    """The labels' hand-made tree, with critic scores: terminals valued 1, rollouts 0.5."""
    tree = _labels_tree()
    for node in tree["nodes"]:
        node["rollouts"] = [dict(r, score=0.5) for r in node["rollouts"]]
        if node.get("terminal"):
            node["value"] = 1.0 if node["verified"] else 0.0
    return tree


def test_complete_solutions_cover_terminals_and_rollouts() -> None:
    found = complete_solutions(_tree())
    assert len(found) == 2 + 5
    assert sum(1 for c in found if c.verified) == 4


def test_sft_rows_take_verified_correct_solutions_only() -> None:
    tree = _tree()
    rows = sft_rows([tree])
    assert rows == [("Q: 2+3*4\n", "3*4=12 -> 2+12\n2+12=14 -> 14\nAnswer: 14\n")]
    assert len(sft_rows([tree, copy.deepcopy(tree)])) == 1  # the same solution twice is one row
    wrong_only = _tree()
    for node in wrong_only["nodes"]:
        node["rollouts"] = [dict(r, verified=False) for r in node["rollouts"]]
        if node.get("terminal"):
            node["verified"] = False
    assert sft_rows([wrong_only]) == []


def test_dpo_pairs_start_at_a_shared_state_and_end_at_terminals() -> None:
    pairs = dpo_pairs([_tree()], min_gap=0.5)
    assert len(pairs) == 1
    pair = pairs[0]
    assert pair.prompt == "Q: 2+3*4\n"  # the shared state: the root
    assert pair.chosen == "3*4=12 -> 2+12\n2+12=14 -> 14\nAnswer: 14\n"
    assert pair.rejected.startswith("3*4=13 -> 2+13\n")
    assert pair.rejected.endswith("\n")
    assert dpo_pairs([_tree()], min_gap=1.01) == []
    assert pair.terminal  # EOS follows both sides


def test_step_dpo_pairs_are_the_two_sibling_options_without_eos() -> None:
    from transformers import PreTrainedTokenizerFast

    from alphallm.lm.tokenizer import build_char_tokenizer
    from alphallm.train.common import encode_pairs

    (pair,) = dpo_pairs([_tree()], min_gap=0.5, span="step")
    assert (pair.prompt, pair.chosen, pair.rejected) == ("Q: 2+3*4\n", "3*4=12 -> 2+12\n", "3*4=13 -> 2+13\n")
    assert not pair.terminal
    tokenizer: PreTrainedTokenizerFast = build_char_tokenizer()
    batch = encode_pairs(tokenizer, [pair.prompt] * 2, [pair.chosen] * 2, add_eos=[pair.terminal, True])
    learned = [row[mask.bool()].tolist() for row, mask in zip(batch.input_ids, batch.completion_mask)]
    assert learned[0] == tokenizer(pair.chosen, add_special_tokens=False)["input_ids"]
    assert learned[1] == learned[0] + [tokenizer.eos_token_id]


def test_a_step_the_verifier_rejected_is_a_step_pair_without_a_completion() -> None:
    tree = _tree()
    nodes = {n["id"]: n for n in tree["nodes"]}
    nodes[0]["children"] = [1, 7]  # the only rival of the good step is the pruned one
    (pair,) = dpo_pairs([tree], min_gap=0.5, span="step")
    assert (pair.chosen, pair.rejected) == ("3*4=12 -> 2+12\n", "2+3=5 -> 5*4\n")
    assert dpo_pairs([tree], min_gap=0.5, span="completion") == []  # nothing below it to complete
