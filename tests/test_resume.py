"""Killed commands keep their finished work and a rerun takes it back, but only for the same work:
a model retrained in place since redoes it, and outputs of two runs never mix."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alphallm.cli import main
from alphallm.errors import UserError


def _counting(patch: pytest.MonkeyPatch, module: Any, name: str, stop_after: int | None = None) -> list[int]:
    """Wraps ``module.name``; the returned list grows by one per call. With ``stop_after``, the call after
    that many raises KeyboardInterrupt, as a Ctrl-C (or a kill) mid-run would."""
    real: Callable[..., Any] = getattr(module, name)
    calls: list[int] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if stop_after is not None and len(calls) >= stop_after:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    patch.setattr(module, name, wrapper)
    return calls


def _retrain_in_place(model: Path) -> None:
    """The weights file rewritten (same size, a later time), as training into the same directory does."""
    weights = model / "model.safetensors"
    later = weights.stat().st_mtime_ns + 10**9
    os.utime(weights, ns=(later, later))


def _calls_after_a_kill_and_retraining(
    monkeypatch: pytest.MonkeyPatch, target: tuple[Any, str], stop_after: int, args: list[str], model: Path
) -> int:
    """Runs ``args`` killed after ``stop_after`` calls of ``target``, retrains ``model`` in place, runs
    them again; returns how many calls of ``target`` that rerun made."""
    with monkeypatch.context() as patch:
        _counting(patch, *target, stop_after=stop_after)
        assert main(args) == 130
    _retrain_in_place(model)
    with monkeypatch.context() as patch:
        calls = _counting(patch, *target)
        assert main(args) == 0
    return len(calls)


def _search_args(model: Path, tmp_path: Path) -> list[str]:
    args = ["search", "--task", "arith", "--model", str(model), "--limit", "4", "--batch-size", "2"]
    args += ["--method", "mcts", "--simulations", "2", "--rollouts", "0", "--max-tokens", "6", "--seed", "3"]
    return [*args, "--out", str(tmp_path / "res.json")]


def test_a_killed_search_resumes_its_finished_batches_unless_the_model_changed(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alphallm.distributed import runner

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    args, chunks = _search_args(model, tmp_path), tmp_path / "res.json.chunks"
    assert main(args) == 0
    whole = json.loads((tmp_path / "res.json").read_text())
    assert not chunks.exists()  # its results are in res.json now
    (tmp_path / "res.json").unlink()

    with monkeypatch.context() as patch:
        _counting(patch, runner, "solve", stop_after=1)
        assert main(args) == 130  # killed in the second of two batches
    assert not (tmp_path / "res.json").exists()
    assert [p.name for p in chunks.iterdir()] == ["chunk-00000.json"]

    with monkeypatch.context() as patch:
        calls = _counting(patch, runner, "solve")
        assert main(args) == 0
    assert len(calls) == 1  # only the batch the kill lost
    resumed = json.loads((tmp_path / "res.json").read_text())
    assert resumed["results"] == whole["results"]
    assert not chunks.exists()

    # Killed again; then the model is retrained in place (same files, rewritten): nothing is reused.
    assert _calls_after_a_kill_and_retraining(monkeypatch, (runner, "solve"), 1, args, model) == 2


def test_saved_trees_are_one_runs_whole_set_with_its_settings(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alphallm import trees as trees_module

    trees = tmp_path / "trees"
    args = [*_search_args(tiny_model_dir, tmp_path), "--save-trees", str(trees)]
    assert main(args) == 0
    first = {p.name: p.read_text() for p in trees.iterdir()}
    assert len(first) == 5 and "seed: 3" in first["search.yaml"]

    # A rerun with another seed fails after its second tree (a full disk, a kill): the first run's
    # trees and settings stay, whole and alone.
    real_write = trees_module.write_json
    written: list[Path] = []

    def disk_full(path: Path, data: Any) -> None:
        if written:
            raise UserError(f"{path}: cannot write (No space left on device)")
        written.append(path)
        real_write(path, data)

    with monkeypatch.context() as patch:
        patch.setattr(trees_module, "write_json", disk_full)
        assert main([*args, "--seed", "4"]) == 2
    assert {p.name: p.read_text() for p in trees.iterdir()} == first
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no half copy left

    # The settings file reruns the same search, and a rerun on fewer problems replaces the set whole.
    again = tmp_path / "again"
    assert (
        main([*args[:-2], "--limit", "2", "--config", str(trees / "search.yaml"), "--save-trees", str(again)])
        == 0
    )
    assert {p.name: p.read_text() for p in again.iterdir() if p.suffix == ".json"}.items() <= first.items()
    assert main([*args[:-2], "--limit", "2", "--save-trees", str(trees)]) == 0
    assert len(list(trees.glob("*.json"))) == 2


def test_a_killed_eval_resumes_its_finished_batches_unless_the_model_changed(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alphallm.chunks import ChunkStore

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    out, chunks = tmp_path / "eval.json", tmp_path / "eval.json.chunks"
    args = ["eval", "--task", "arith", "--model", str(model), "--limit", "5", "--batch-size", "2"]
    args += ["--method", "sample", "--n", "2", "--max-tokens", "6", "--seed", "5", "--out", str(out)]
    assert main(args) == 0
    whole = json.loads(out.read_text())
    assert not chunks.exists()
    out.unlink()

    with monkeypatch.context() as patch:
        _counting(patch, ChunkStore, "save", stop_after=2)
        assert main(args) == 130  # killed in the third of three batches
    assert sorted(p.name for p in chunks.iterdir()) == ["chunk-00000.json", "chunk-00001.json"]
    with monkeypatch.context() as patch:
        saves = _counting(patch, ChunkStore, "save")
        assert main(args) == 0
    assert len(saves) == 1
    resumed = json.loads(out.read_text())
    assert resumed["records"] == whole["records"] and resumed["usage"] == whole["usage"]
    assert resumed["metrics"] == whole["metrics"]
    assert not chunks.exists()

    assert _calls_after_a_kill_and_retraining(monkeypatch, (ChunkStore, "save"), 2, args, model) == 3


def test_a_killed_pretraining_resumes_from_its_checkpoint_to_the_same_weights(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from safetensors.torch import load_file

    from alphallm.train.pretrain import PretrainConfig, pretrain

    sizes = {"hidden_size": 24, "num_layers": 1, "num_heads": 2, "intermediate_size": 32, "batch_size": 4}
    settings = {"task": "arith", "steps": 7, "checkpoint_every": 2, "eval_problems": 2, **sizes}

    def weights(out: Path) -> dict[str, Any]:
        return load_file(out / "model.safetensors")

    pretrain(PretrainConfig(out=str(tmp_path / "whole"), **settings))  # type: ignore[arg-type]

    def killed_at_step_4(step: int, loss: float) -> None:
        if step == 4:
            raise KeyboardInterrupt

    config = PretrainConfig(out=str(tmp_path / "cut"), **settings)  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        pretrain(config, on_step=killed_at_step_4)
    assert not (tmp_path / "cut").exists() and (tmp_path / "cut.checkpoint" / "state.pt").exists()
    caplog.clear()
    card = pretrain(config)
    assert caplog.text == ""
    assert card["resumed_at_step"] == 4  # steps 0-3 from the checkpoint; step 4's was lost with the kill
    assert not (tmp_path / "cut.checkpoint").exists()
    whole, resumed = weights(tmp_path / "whole"), weights(tmp_path / "cut")
    assert whole.keys() == resumed.keys() and all(whole[k].equal(resumed[k]) for k in whole)

    # Other settings, or a damaged checkpoint, start over rather than take it.
    with pytest.raises(KeyboardInterrupt):
        pretrain(config, on_step=killed_at_step_4)
    other = PretrainConfig(out=str(tmp_path / "cut"), **{**settings, "lr": 1e-3})  # type: ignore[arg-type]
    caplog.clear()
    assert "resumed_at_step" not in pretrain(other)
    assert "cut.checkpoint is another training's" in caplog.text  # the log says why it took so long
    with pytest.raises(KeyboardInterrupt):
        pretrain(config, on_step=killed_at_step_4)
    state = tmp_path / "cut.checkpoint" / "state.pt"
    data = bytearray(state.read_bytes())
    pickled = data.index(b"\x80\x02", data.index(b"data.pkl"))  # the state's pickle, inside the zip
    data[pickled + 40 : pickled + 48] = b"\xff" * 8
    state.write_bytes(bytes(data))
    caplog.clear()
    assert "resumed_at_step" not in pretrain(config)
    assert "state.pt is unreadable" in caplog.text

    # A file where the checkpoint goes is refused before any training, not at the first checkpoint.
    (tmp_path / "p.checkpoint").write_text("mine")
    elsewhere = PretrainConfig(out=str(tmp_path / "p"), **settings)  # type: ignore[arg-type]
    steps: list[int] = []
    with pytest.raises(UserError, match=r"p\.checkpoint exists and is not a checkpoint directory"):
        pretrain(elsewhere, on_step=lambda step, loss: steps.append(step))
    assert steps == []


@pytest.mark.parametrize("confidence", [False, True], ids=["whole-model", "frozen-features"])
def test_a_killed_critic_training_resumes_from_its_checkpoint_to_the_same_critic(
    tiny_model_dir: Path, tmp_path: Path, confidence: bool
) -> None:
    from tests.test_critics import _synthetic_rows

    from alphallm.lm.loading import load_causal_lm, model_files
    from alphallm.train.critic import CriticTrainConfig, critic_checkpoint, train_critic
    from alphallm.train.lora import snapshot_trainable

    rows = _synthetic_rows(120, 0)
    config = CriticTrainConfig(
        epochs=3, lr=3e-3, batch_size=16, seed=0, checkpoint_every=4, confidence=confidence
    )

    def train(checkpoint: Any = None, on_step: Any = None) -> tuple[Any, dict[str, Any]]:
        base, tokenizer = load_causal_lm(str(tiny_model_dir))
        return train_critic(
            rows,
            base=base,
            tokenizer=tokenizer,
            kind="orm",
            config=config,
            checkpoint=checkpoint,
            on_step=on_step,
        )

    whole, metrics = train()

    def killed_at_step_9(step: int, loss: float) -> None:
        if step == 9:  # in the second epoch, past a checkpoint at step 8
            raise KeyboardInterrupt

    base, _ = load_causal_lm(str(tiny_model_dir))
    place, files = tmp_path / "orm.checkpoint", model_files(tiny_model_dir)
    checkpoint = critic_checkpoint(place, rows, "orm", config, files=files, base=base)
    with pytest.raises(KeyboardInterrupt):
        train(checkpoint, killed_at_step_9)
    steps: list[int] = []
    resumed, again = train(checkpoint, lambda step, loss: steps.append(step))
    assert again["resumed_at_step"] == 8 and steps[0] == 8
    assert again["history"] == metrics["history"]
    assert json.dumps(again["held_out"]) == json.dumps(metrics["held_out"])  # NaN where undefined
    trained, retrained = snapshot_trainable(whole), snapshot_trainable(resumed)
    assert trained.keys() == retrained.keys() and all(trained[k].equal(retrained[k]) for k in trained)

    # Other rows, settings, backbone files or dtype start over.
    assert checkpoint.load() is not None
    assert critic_checkpoint(place, rows[1:], "orm", config, files=files, base=base).load() is None
    assert critic_checkpoint(place, rows, "orm", config, files=files, base=base.bfloat16()).load() is None


def test_a_loop_evaluation_killed_in_its_searches_keeps_its_greedy_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alphallm import loop_solve
    from alphallm.chunks import ChunkStore
    from alphallm.loop import Quiet
    from alphallm.loop_config import EvalSettings
    from alphallm.tasks import get_task

    task = get_task("arith")
    settings = EvalSettings(test_problems=6, search_problems=2, max_tokens=8)
    saved: list[str] = []  # the directory of every chunk saved
    real_save = ChunkStore.save

    def save(store: ChunkStore, *args: Any) -> dict[str, Any]:
        saved.append(store.directory.name)
        return real_save(store, *args)

    monkeypatch.setattr(ChunkStore, "save", save)

    def evaluation() -> dict[str, Any]:
        test = task.problems("test")[:6]
        args = {"seed": 0, "ui": Quiet(), "label": "round 0", "chunks": tmp_path / "eval.chunks"}
        return loop_solve.evaluate_policy(task, test, "arith-base", {}, settings, **args)

    with monkeypatch.context() as patch:
        _counting(patch, loop_solve, "solve_with", stop_after=0)  # killed in the first search
        with pytest.raises(KeyboardInterrupt):
            evaluation()
    assert saved == ["greedy"]
    saved.clear()
    again = evaluation()
    assert "greedy" not in saved and saved  # the searches ran; the greedy batch came from disk
    assert len(again["greedy"]["solved"]) == 6


def test_search_chunks_are_redone_when_a_lora_critics_base_is_retrained_in_place(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A LoRA critic's scores come from its adapters and from the base they sit on, a directory of its
    own (``critic.json``'s ``lora_base``): its files are part of a search's work as well."""
    from tests.test_critics import _synthetic_rows

    from alphallm.distributed.runner import _work
    from alphallm.lm.loading import load_causal_lm
    from alphallm.solve_config import SolveConfig
    from alphallm.tasks import get_task
    from alphallm.train.critic import CriticTrainConfig, train_critic

    base_dir = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base_dir)
    base, tokenizer = load_causal_lm(str(base_dir))
    config = CriticTrainConfig(epochs=1, batch_size=16, lora_r=2)
    critic, _ = train_critic(
        _synthetic_rows(40, 0), base=base, tokenizer=tokenizer, kind="orm", config=config
    )
    critic.save(tmp_path / "orm", tokenizer, {})
    task = get_task("arith")
    problems = task.problems("test")[:2]
    search = SolveConfig(critic_dirs={"orm": str(tmp_path / "orm")}, weights={"orm": 1.0})

    def work() -> dict[str, Any]:
        return _work(task, problems, "arith-base", None, search, False, None)

    before = work()
    assert before["files"]["orm.lora_base"]  # the base's files, beside the adapters'
    _retrain_in_place(base_dir)
    assert work() != before


def test_a_file_where_a_checkpoint_or_chunks_go_is_refused_before_the_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("c.checkpoint", "res.json.chunks"):
        (tmp_path / name).write_text("mine")
    critic = ["train-critic", "--kind", "orm", "--trees", str(tmp_path / "no-trees"), "--base", "arith-base"]
    assert main([*critic, "--out", str(tmp_path / "c")]) == 2
    assert "c.checkpoint exists and is not a checkpoint directory" in capsys.readouterr().err
    search = ["search", "--task", "arith", "--model", "no/such/model", "--out", str(tmp_path / "res.json")]
    assert main(search) == 2
    assert "res.json.chunks exists and is not a chunks directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.checkpoint", "res.json.chunks"]
