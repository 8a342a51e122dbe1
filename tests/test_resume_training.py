"""A policy's SFT or DPO killed mid-training resumes from its checkpoint to the weights an uninterrupted
training makes, and only for the same work; the loop's learning stages pass their checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

ROWS = [(f"Q{i}: 2+{i}=", f" {2 + i}") for i in range(60)]  # 6 held out; 7 batches of 8 an epoch


def _pairs() -> list[Any]:
    from alphallm.train.dpo import Pair

    return [Pair(prompt=f"Q{i}: 3+{i}=", chosen=f" {3 + i}", rejected=f" {4 + i}") for i in range(40)]


def _killed_at(step: int) -> Callable[[int, float], None]:
    def on_step(at: int, loss: float) -> None:
        if at == step:
            raise KeyboardInterrupt  # as a Ctrl-C (or a kill) after this step's update would

    return on_step


def _same_weights(a: Any, b: Any) -> bool:
    one, two = a.state_dict(), b.state_dict()
    return one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)


@pytest.mark.parametrize("lora_r", [0, 4], ids=["full", "lora"])
@pytest.mark.parametrize("trainer", ["sft", "dpo"])
def test_a_killed_policy_training_resumes_from_its_checkpoint_to_the_same_weights(
    tiny_model_dir: Path, tmp_path: Path, trainer: str, lora_r: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alphallm.lm.loading import load_causal_lm, model_files
    from alphallm.train import dpo as dpo_module
    from alphallm.train.checkpoint import training_checkpoint
    from alphallm.train.dpo import DPOConfig, dpo
    from alphallm.train.sft import SFTConfig, sft

    data: Any
    if trainer == "sft":
        config: Any = SFTConfig(epochs=2, batch_size=8, lr=1e-3, seed=1, lora_r=lora_r, checkpoint_every=4)
        data, kill = ROWS, 9  # saved at steps 4, 7 (the first epoch's end) and 8: resumes at 8
    else:
        # 5 batches an epoch; killed in the third epoch, which shuffles the second one's order.
        config = DPOConfig(epochs=3, batch_size=8, lr=1e-3, seed=2, lora_r=lora_r, checkpoint_every=4)
        data, kill = _pairs(), 13  # saved at steps 4, 5, 8, 10 and 12: resumes at 12

    def train(checkpoint: Any = None, on_step: Any = None) -> tuple[Any, dict[str, Any]]:
        model, tokenizer = load_causal_lm(str(tiny_model_dir))
        if trainer == "sft":
            return model, sft(model, tokenizer, data, config=config, on_step=on_step, checkpoint=checkpoint)
        metrics = dpo(model, None, tokenizer, data, config=config, on_step=on_step, checkpoint=checkpoint)
        return model, metrics

    whole, metrics = train()
    start, _ = load_causal_lm(str(tiny_model_dir))
    files = model_files(tiny_model_dir)
    place = tmp_path / "policy.checkpoint"
    checkpoint = training_checkpoint(place, data, config, start=(start, files))
    with pytest.raises(KeyboardInterrupt):
        train(checkpoint, _killed_at(kill))
    references: list[int] = []
    real_reference = dpo_module._reference

    def reference(*args: Any) -> Any:
        references.append(1)
        return real_reference(*args)

    monkeypatch.setattr(dpo_module, "_reference", reference)
    steps: list[int] = []
    resumed, again = train(checkpoint, lambda step, loss: steps.append(step))
    assert again["resumed_at_step"] == kill - 1 and steps[0] == kill - 1
    assert again["steps"] == metrics["steps"] and _same_weights(whole, resumed)
    assert not references  # DPO's reference log-probs came back with the checkpoint
    if trainer == "sft":
        assert again["history"] == metrics["history"] and again["held_out_loss"] == metrics["held_out_loss"]
    else:
        assert again["first_loss"] == metrics["first_loss"] and again["final"] == metrics["final"]

    # Other data, settings or starting weights start over; how often it saves does not matter.
    from dataclasses import replace

    assert training_checkpoint(place, data, replace(config, checkpoint_every=9), start=(start, files)).load()
    assert training_checkpoint(place, data[1:], config, start=(start, files)).load() is None
    assert training_checkpoint(place, data, replace(config, lr=2e-3), start=(start, files)).load() is None
    assert training_checkpoint(place, data, config, start=(start.bfloat16(), files)).load() is None


@pytest.mark.parametrize("trainer", ["lean", "trl"])
def test_the_loops_learning_stages_killed_mid_training_resume_from_their_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trainer: str
) -> None:
    import json
    import random

    from alphallm import loop_learn
    from alphallm.lm.loading import load_causal_lm
    from alphallm.loop import Loop
    from alphallm.loop_config import LoopConfig, build
    from alphallm.tasks.game24 import Game24Task

    task, rng = Game24Task(), random.Random(0)
    problems = task.problems("train")[:24]
    rows = [(task.format_prompt(p), s) for p in problems for s in task.solutions(p, 2, rng)]
    pairs = [
        {"prompt": prompt, "chosen": right, "rejected": other, "terminal": True}
        for (prompt, right), (_, other) in zip(rows[::2], rows[3::2])
    ]
    learn = {
        "trainer": trainer,
        "dpo_span": "completion",  # TRL's DPO takes only pairs of complete solutions
        "sft": {"epochs": 2, "batch_size": 8, "checkpoint_every": 3},
        "dpo": {"epochs": 2, "batch_size": 4, "checkpoint_every": 3},
    }

    def loop_in(name: str) -> Loop:
        config = {"name": name, "task": "game24", "policy": "game24-base", "out_dir": str(tmp_path)}
        loop = Loop(build(LoopConfig, {**config, "learn": learn}))
        loop.round_dir(1).mkdir(parents=True)
        (loop.round_dir(1) / "data.json").write_text(json.dumps({"sft": rows, "pairs": pairs}))
        return loop

    straight = loop_in("straight")
    records = {"sft": loop_learn.sft_stage(straight, 1), "dpo": loop_learn.dpo_stage(straight, 1)}

    killed, real_trainers = loop_in("killed"), loop_learn.trainers

    def killing_at(step: int) -> Callable[[str], tuple[Any, ...]]:
        """``trainers`` whose trainers are interrupted after ``step``."""

        def trainers(name: str) -> tuple[Any, ...]:
            return tuple(
                lambda *a, train=train, on_step, **kw: train(*a, on_step=_killed_at(step), **kw)
                for train in real_trainers(name)
            )

        return trainers

    # SFT: 44 rows to train on, 6 batches an epoch; DPO: 23 pairs, 6 batches an epoch. Both save at steps
    # 3 and 9, and the lean trainers at 6 too (an epoch's end).
    for stage, kill in (("sft", 4), ("dpo", 10)):
        run = loop_learn.sft_stage if stage == "sft" else loop_learn.dpo_stage
        monkeypatch.setattr(loop_learn, "trainers", killing_at(kill))
        with pytest.raises(KeyboardInterrupt):
            run(killed, 1)
        directory = "sft" if stage == "sft" else "policy"
        # TRL's: transformers' own checkpoint folders, with our callbacks' state beside each.
        saved = "state.pt" if trainer == "lean" else f"checkpoint-{kill - 1}/alphallm.pt"
        assert (killed.round_dir(1) / f"{directory}.checkpoint" / saved).is_file()
        monkeypatch.setattr(loop_learn, "trainers", real_trainers)
        record = run(killed, 1)
        assert record["resumed_at_step"] == kill - 1 and record["steps"] == records[stage]["steps"]
        assert not (killed.round_dir(1) / f"{directory}.checkpoint").exists()  # gone once the model is saved
        one = load_causal_lm(straight.round_dir(1) / directory)[0]
        assert _same_weights(one, load_causal_lm(killed.round_dir(1) / directory)[0])
