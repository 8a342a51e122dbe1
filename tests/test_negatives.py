"""Made negatives: wrong variants of right solutions that an ORM trains on (``train-critic --negatives``).
The arith task's own corruptions are tested with the task (tests/test_tasks.py), the loop's use of them in
tests/test_loop.py."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from alphallm.lm.loading import load_causal_lm
from alphallm.tasks import get_task
from alphallm.train.critic import CriticTrainConfig, task_corrupter, train_critic, training_steps
from alphallm.train.labels import LabelRow, corrupted_rows


def test_corrupted_rows_are_distinct_negatives_of_correct_solutions_only() -> None:
    rows = [LabelRow("Q: a\n", "right\n", 1.0, 2.0, "a"), LabelRow("Q: b\n", "wrong\n", 0.0, 1.0, "b")]

    def corrupt(row: LabelRow, rng: random.Random) -> str | None:
        return None if rng.random() < 0.3 else f"{row.solution}{rng.randint(0, 2)}\n"

    out = corrupted_rows(rows, corrupt, 2, random.Random(0))
    assert len(out) == 2 and len({r.solution for r in out}) == 2
    assert all((r.prompt, r.target, r.weight, r.group) == ("Q: a\n", 0.0, 2.0, "a") for r in out)
    # A corruption that can only repeat itself gives one row, after a bounded number of tries.
    assert len(corrupted_rows(rows, lambda row, rng: "same\n", 5, random.Random(0))) == 1
    assert corrupted_rows(rows, lambda row, rng: None, 3, random.Random(0)) == []


def test_an_orm_trains_on_negatives_made_from_its_correct_training_solutions(tiny_model_dir: Path) -> None:
    base, tokenizer = load_causal_lm(str(tiny_model_dir))
    rng = random.Random(0)
    digits = [rng.randint(0, 9) for _ in range(200)]  # right when the last digit is even
    rows = [
        LabelRow("Q: x\n", f"{10 + i}{d}\n", float(d % 2 == 0), group=f"g{i}") for i, d in enumerate(digits)
    ]

    def corrupt(row: LabelRow, rng: random.Random) -> str | None:
        return row.solution[:-2] + str(rng.choice("13579")) + "\n"

    config = CriticTrainConfig(epochs=1, batch_size=16, holdout=0.25, negatives=2, seed=0)
    taken: list[int] = []
    _, metrics = train_critic(
        rows,
        base=base,
        tokenizer=tokenizer,
        kind="orm",
        config=config,
        on_step=lambda s, _: taken.append(s),
        corrupt=corrupt,
    )
    assert 0 < metrics["negatives"] <= 2 * sum(r.target == 1.0 for r in rows)
    assert metrics["train_rows"] == 150 + metrics["negatives"]  # held-out rows get none
    assert metrics["held_out_rows"] == 50
    assert len(taken) <= training_steps(rows, config, "orm")
    # The loop's critics share one config: the other kinds train on their labels alone.
    _, metrics = train_critic(
        rows, base=base, tokenizer=tokenizer, kind="value", config=config, corrupt=corrupt
    )
    assert metrics["negatives"] == 0 and metrics["train_rows"] == 150
    assert training_steps(rows, config, "value") == -(-150 // 16)
    with pytest.raises(ValueError, match="corrupt"):
        train_critic(rows, base=base, tokenizer=tokenizer, kind="orm", config=config)
    with pytest.raises(ValueError, match="game24"):
        task_corrupter(get_task("game24"))
