"""The loop's one line per finished stage, read from the record the stage wrote."""

from __future__ import annotations

import pytest

from alphallm.loop import STAGES
from alphallm.report.stage_lines import stage_line


def test_each_stage_says_what_it_did_in_a_line() -> None:
    records = {
        "imagine": {
            "problems": 999,
            "generated": 749,
            "imagined": {"sampled": 500, "kept": 250},
            "answers": {"unanswered": 250, "agreed": 240, "dropped": 10},
        },
        "search": {"problems": 999, "accuracy": 523 / 999, "generated_tokens": 1000586},
        "data": {"sft": [{}] * 530, "pairs": [{}] * 5, "problems": 999, "solved": 523},
        "sft": {"rows": 530, "steps": 136},
        "dpo": {"pairs": 5, "steps": 2, "final": {"margin": 1.1034}},
        "critics": {"trained": ["orm"], "kept": {"orm": "x"}, "value": {"skipped": "only 3 labels"}},
        "gate": {
            "accepted": True,
            "kept": "sft",
            "metric": "greedy",
            "dev_accuracy": 0.0952,
            "previous_dev_accuracy": 0.0397,
        },
        "evaluate": {"policy": "round-1/sft", "greedy": {"accuracy": 0.11}, "mcts": {"accuracy": 0.66}},
    }
    assert [stage_line(stage, records[stage]) for stage in STAGES] == [
        "999 problems: 749 from the task's generator, 250 of 500 imagined kept "
        "(10 then dropped: no agreed answer)",
        "solved 523 of 999 problems (0.524), 1,000,586 tokens generated",
        "530 SFT rows and 5 DPO pairs from 523 of 999 problems solved",
        "530 rows, 136 steps",
        "5 pairs, 2 steps, final reward margin 1.103",
        "trained orm; value skipped (only 3 labels); in use: orm",
        "kept sft (greedy dev accuracy 0.095, 0.040 before)",
        "greedy 0.110, mcts 0.660",
    ]
    # A candidate the gate turns down is named, but the policy before the round stays (it read "kept").
    rejected = {**records["gate"], "accepted": False, "dev_accuracy": 0.6, "previous_dev_accuracy": 0.7}
    assert stage_line("gate", rejected) == (
        "none kept, the policy before stays: sft (greedy dev accuracy 0.600, 0.700 before)"
    )
    guard = {"candidates": {"sft": {"accuracy": 0.5, "reference": {"accuracy": 0.62}, "passed": False}}}
    assert stage_line("gate", {**rejected, "dev_accuracy": 0.8, "search_guard": guard}) == (
        "none kept, the policy before stays: sft (greedy dev accuracy 0.800, 0.700 before), "
        "dev search 0.500 against 0.620"
    )
    assert stage_line("sft", {"rows": 0}) == "no rows: the policy stays as it was"
    assert stage_line("dpo", {"pairs": 0, "skipped": True}) == "0 pairs: skipped"
    assert stage_line("gate", {"accepted": False, "kept": None, "nothing_trained": True}) == (
        "nothing trained: the policy before stays"
    )
    repeated = {**records["evaluate"], "repeated": {"round": 1, "methods": ["greedy", "mcts"]}}
    assert stage_line("evaluate", repeated) == (
        "greedy 0.110, mcts 0.660 (greedy, mcts taken from round 1: the same policy)"
    )


@pytest.mark.parametrize("stage", [*STAGES, "no-such-stage"])
def test_a_sparse_record_gives_a_shorter_line_not_an_error(stage: str) -> None:
    # A record of older code, or of a stage that had nothing to do, lacks fields.
    line = stage_line(stage, {})
    assert isinstance(line, str) and (stage in STAGES or line == "")
