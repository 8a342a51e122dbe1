from __future__ import annotations

import copy
import json
from pathlib import Path
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


def test_only_right_solutions_that_state_their_answer_are_taught() -> None:
    """gsm8k's verifier falls back to a solution's last number, so its trees hold right solutions that
    never write an answer line (here the rollouts, ``...``); the loop teaches none of them."""
    from alphallm.tasks.gsm8k import GSM8KTask

    stated = GSM8KTask().is_terminal  # "Answer: 14" is one of its answer lines; "..." states nothing
    tree = _tree()
    everything = sft_rows([tree], per_problem=5)
    assert any(not stated(solution) for _, solution in everything)
    assert sft_rows([tree], per_problem=5, states_answer=stated) == [
        ("Q: 2+3*4\n", "3*4=12 -> 2+12\n2+12=14 -> 14\nAnswer: 14\n")
    ]
    tree["nodes"][5]["value"] = 0.0  # the stated solution now scores below the unstated rollouts
    (loose,) = dpo_pairs([tree], min_gap=0.5)
    (strict,) = dpo_pairs([tree], min_gap=0.5, states_answer=stated)
    assert not stated(loose.chosen) and strict.chosen == "3*4=12 -> 2+12\n2+12=14 -> 14\nAnswer: 14\n"


def test_the_loops_data_stage_counts_and_drops_right_solutions_without_an_answer_line(tmp_path: Path) -> None:
    from alphallm.loop import Loop
    from alphallm.loop_config import LoopConfig, build

    # arith's verifier would never call "..." right; the hand-made tree says so, as gsm8k's can.
    loop = Loop(build(LoopConfig, {"out_dir": str(tmp_path), "learn": {"solutions_per_problem": 5}}))
    loop.round_dir(1).mkdir(parents=True)
    (loop.round_dir(1) / "trees.json").write_text(json.dumps({"trees": [_tree()]}))
    record = loop._stage_data(1)  # type: ignore[attr-defined]
    assert record["sft"] == [("Q: 2+3*4\n", "3*4=12 -> 2+12\n2+12=14 -> 14\nAnswer: 14\n")]
    assert record["right_without_an_answer_line"] == 3  # the three right rollouts
