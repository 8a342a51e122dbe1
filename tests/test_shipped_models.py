"""The committed base models load offline and are as imperfect as their cards say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alphallm.evaluation import evaluate
from alphallm.lm import load_lm
from alphallm.lm.loading import SHIPPED_MODELS_DIR
from alphallm.tasks import get_task


@pytest.mark.parametrize("name", ["arith-base", "game24-base"])
def test_model_cards_and_sizes(name: str) -> None:
    directory = SHIPPED_MODELS_DIR / name
    card = json.loads((directory / "training.json").read_text())
    assert card["command"].startswith("alphallm pretrain --task")
    assert (directory / "model.safetensors").stat().st_size < 20 * 2**20
    assert "Command:" in (directory / "README.md").read_text()


def test_arith_base_is_right_about_half_the_time() -> None:
    task = get_task("arith")
    result = evaluate(task, load_lm("arith-base"), task.problems("test")[:60], method="greedy")
    assert 0.15 <= result.metrics["accuracy"] <= 0.75
    assert result.metrics["answer_rate"] > 0.95


def test_game24_base_knows_the_rules_not_the_strategy() -> None:
    task = get_task("game24")
    result = evaluate(task, load_lm("game24-base"), task.problems("test")[:50], method="greedy")
    assert result.metrics["legal_step_rate"] >= 0.95
    assert result.metrics["accuracy"] <= 0.15


def test_shipped_models_need_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lm = load_lm("game24-base")
    assert Path(lm.model.name_or_path).name == "game24-base"  # type: ignore[attr-defined]


def test_a_path_to_a_directory_named_like_a_shipped_model_loads_that_directory(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``alphallm pretrain --task arith`` writes ./arith-base by default; ``--model ./arith-base`` then
    loaded the shipped model instead (``SHIPPED / "./arith-base"`` is the shipped directory)."""
    import shutil

    from alphallm.commands.eval_cmd import model_label
    from alphallm.lm.loading import SHIPPED_MODELS_DIR, resolve_model_path

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir, "arith-base")
    for name in ("./arith-base", str(tmp_path / "arith-base"), "arith-base/"):
        assert Path(resolve_model_path(name)).resolve() == (tmp_path / "arith-base").resolve(), name
    assert not caplog.records
    # A bare name is the shipped model, as documented, but not without a word about the directory here.
    assert resolve_model_path("arith-base") == str(SHIPPED_MODELS_DIR / "arith-base")
    assert "./arith-base" in caplog.text and "shipped" in caplog.text
    # Nor do its results take the shipped model's file name.
    assert model_label("./arith-base") == f"{tmp_path.parent.name}-{tmp_path.name}-arith-base"
    assert model_label("arith-base") == "arith-base"
