"""A round whose search verifies no solution has nothing to learn from. It must say so, keep the policy
before it without copying it twice or scoring the copy on dev, and train no critic on labels that all
agree: an untrained random model on arith solves nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from alphallm.loop import Loop, Quiet
from alphallm.loop_config import LoopConfig, build


class _Recorder(Quiet):
    def __init__(self) -> None:
        self.said: list[str] = []

    def message(self, text: str) -> None:
        self.said.append(text)

    def progress(self, description: str, total: int) -> Any:
        self.said.append(f"progress: {description}")
        return super().progress(description, total)


def test_a_round_that_solves_nothing_trains_nothing_and_keeps_the_policy_before(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    mcts = {"num_simulations": 4, "max_depth": 3}
    search = {"rollouts": 1, "batch_size": 6, "max_tokens": 12, "mcts": mcts}
    config = {
        "name": "empty",
        "task": "arith",
        "policy": str(tiny_model_dir),
        "rounds": 1,
        "out_dir": str(tmp_path / "runs"),
        "imagine": {"problems": 6, "imagined_fraction": 0.0},
        "search": search,
        "critics": {"kinds": ["value", "orm"], "train": {"epochs": 1, "batch_size": 8}},
        "evaluate": {
            "test_problems": 3,
            "search_problems": 2,
            "dev_problems": 3,
            "max_tokens": 12,
            "self_consistency": False,
            "search": search,
        },
    }
    loop = Loop(build(LoopConfig, config), ui=_Recorder())
    loop.run()
    data = loop.read(1, "data")
    assert (data["solved"], data["sft"], data["pairs"]) == (0, [], [])
    # No model directory is written for a round that trained nothing (a 7 B policy is 15 GB a copy).
    assert not (loop.round_dir(1) / "sft").exists() and not (loop.round_dir(1) / "policy").exists()
    gate = loop.gate(1)
    assert not gate["accepted"] and gate["nothing_trained"] and gate["candidates"] == {}
    assert loop.policy(1) == str(tiny_model_dir)
    assert (loop.dir / "kept-policy").resolve() == tiny_model_dir.resolve()
    # Every label is a failure: a critic trained on them would score everything alike.
    critics = loop.read(1, "critics")
    assert critics["trained"] == [] and critics["kept"] == {}
    for kind in ("value", "orm"):
        assert re.fullmatch(r"all \d+ labels are 0", critics[kind]["skipped"])
    said = "\n".join(loop.ui.said)  # type: ignore[attr-defined]
    assert "round 1: gate done in " in said and "nothing trained: the policy before stays" in said
    assert "orm skipped (all " in said
    evaluate = json.loads((loop.round_dir(1) / "evaluate.json").read_text())
    assert evaluate["policy"] == str(tiny_model_dir) and not evaluate["accepted"]
    # The same policy, settings and critics (none) as round 0: its records are taken, not decoded again.
    before = json.loads((loop.round_dir(0) / "eval.json").read_text())
    assert evaluate["repeated"] == {"round": 0, "methods": ["greedy", "mcts"]}
    assert {m: evaluate[m] for m in ("greedy", "mcts")} == {m: before[m] for m in ("greedy", "mcts")}
    assert "progress: round 0 eval mcts" in said and "progress: round 1 eval" not in said  # no search ran


def test_an_evaluation_is_repeated_only_with_the_same_settings_and_critics_for_the_critics_search() -> None:
    from alphallm.loop_solve import repeated_methods

    before = {"evaluation_key": "k1", "greedy": {"accuracy": 0.5}, "mcts": {}, "mcts_critics": {}, "sc": {}}
    assert sorted(repeated_methods(before, key="k1", same_critics=True)) == [
        "greedy",
        "mcts",
        "mcts_critics",
        "sc",
    ]
    assert sorted(repeated_methods(before, key="k1", same_critics=False)) == ["greedy", "mcts", "sc"]
    assert repeated_methods(before, key="k2", same_critics=True) == {}  # resumed with other settings
    assert (
        repeated_methods(
            {k: v for k, v in before.items() if k != "evaluation_key"}, key="k1", same_critics=True
        )
        == {}
    )


def test_train_critic_on_trees_without_a_verified_success_says_so_in_one_line(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from alphallm.cli import main

    monkeypatch.chdir(tmp_path)  # the search's results file goes to runs/search/ here
    trees = tmp_path / "trees"
    search = ["search", "--task", "arith", "--split", "train", "--limit", "4", "--model", str(tiny_model_dir)]
    assert main([*search, "--simulations", "4", "--max-tokens", "12", "--save-trees", str(trees)]) == 0
    capsys.readouterr()
    out = tmp_path / "orm"
    args = ["--trees", str(trees), "--base", str(tiny_model_dir), "--out", str(out)]
    assert main(["train-critic", "--kind", "orm", *args]) == 2
    error = capsys.readouterr().err
    assert re.match(rf"alphallm: error: {trees}: all \d+ labels are 0 \(orm, from 4 trees\)", error)
    assert error.count("\n") == 1 and not out.exists()
