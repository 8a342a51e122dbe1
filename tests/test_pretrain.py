from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alphallm.cli import main
from alphallm.lm.loading import load_causal_lm


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


def test_pretrain_never_replaces_what_is_not_a_model_and_says_so_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import alphallm.train.pretrain as recipe

    # Refused before training: building the model would fail this test.
    monkeypatch.setattr(recipe, "build_model", lambda *a: pytest.fail("trained before checking --out"))
    data, notes = tmp_path / "mydata", tmp_path / "notes.txt"
    data.mkdir()
    (data / "notes.txt").write_text("mine")
    notes.write_text("mine")
    base = ["pretrain", "--task", "arith", "--steps", "1", "--eval-problems", "1", "--out"]
    for out in (data, notes):
        assert main([*base, str(out)]) == 2
        assert capsys.readouterr().err == (
            f"alphallm: error: {out} exists and is not a model directory; choose another --out\n"
        )
    assert main([*base, "/proc/m"]) == 2
    assert "/proc/m: cannot write in /proc" in capsys.readouterr().err
    assert (data / "notes.txt").read_text() == notes.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydata", "notes.txt"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr", "-1"], "--lr must be positive"),
        (["--lr", "0"], "--lr must be positive"),
        (["--eval-problems", "0"], "--eval-problems must be at least 1"),
        (["--eval-problems", "-2"], "--eval-problems must be at least 1"),
        (
            ["--task", "game24", "--noise", "0.1"],
            "--noise is for --task arith (the game24 teacher never slips)",
        ),
    ],
)
def test_pretrain_refuses_bad_recipe_flags_in_one_line(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a --task in flags comes last and wins
    args = ["pretrain", "--task", "arith", "--steps", "1", *flags, "--out", str(tmp_path / "m")]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith(f"alphallm: error: {message}")
    assert not (tmp_path / "m").exists()
