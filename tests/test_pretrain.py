from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from alphallm.cli import main
from alphallm.lm.hf import load_causal_lm


def test_pretrain_builds_the_architecture_it_is_asked_for_and_the_model_loads(tmp_path: Path) -> None:
    out = tmp_path / "g24"
    args = ["pretrain", "--task", "game24", "--steps", "3", "--eval-problems", "2", "--out", str(out)]
    assert main([*args, "--hidden-size", "48", "--layers", "2", "--heads", "3", "--mlp", "96"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (48, 2)
    assert (config["num_attention_heads"], config["intermediate_size"]) == (3, 96)
    card = json.loads((out / "training.json").read_text())
    model, _ = load_causal_lm(str(out), dtype="float32")
    assert card["parameters"] == sum(p.numel() for p in model.parameters())
    assert card["config"]["steps"] == 3 and card["greedy_test"]["problems"] == 2
    # The card's command makes the same model again, however the CLI was started (here: main()).
    assert card["command"] == (
        f"alphallm pretrain --task game24 --out {out} --steps 3 --eval-problems 2 "
        "--hidden-size 48 --layers 2 --heads 3 --mlp 96"
    )
    assert "2 layers, width 48, 3 heads, MLP 96" in (out / "README.md").read_text()


def test_pretrain_rejects_an_impossible_architecture_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "alphallm",
            "pretrain",
            "--task",
            "game24",
            "--hidden-size",
            "50",
            "--heads",
            "3",
            "--out",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "divisible by num_heads" in result.stderr
    assert not (tmp_path / "m").exists()
