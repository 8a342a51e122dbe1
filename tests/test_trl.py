"""``learn.trainer: trl``: SFT and DPO through TRL's trainers compute the lean trainers' losses on the same
rows and pairs, train the model in place (LoRA merged), and refuse what TRL would silently get wrong."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch

from alphallm.errors import UserError
from alphallm.lm.loading import load_causal_lm
from alphallm.train.dpo import DPOConfig, Pair
from alphallm.train.dpo import training_steps as dpo_steps
from alphallm.train.lora import is_peft_model
from alphallm.train.sft import SFTConfig, sft
from alphallm.train.sft import training_steps as sft_steps
from alphallm.train.trl_train import trl_dpo, trl_sft

pytest.importorskip("trl")

ROWS = [(f"Q: {a}+{b}\n", f"{a}+{b}={a + b}\nAnswer: {a + b}\n") for a in range(2, 8) for b in range(3, 8)]
PAIRS = [Pair(prompt=p, chosen=c, rejected=c.replace("Answer", "Answr")) for p, c in ROWS[:8]]


def test_trl_sft_holds_out_and_scores_as_the_lean_sft_and_keeps_its_best_epoch(tiny_model_dir: Path) -> None:
    config = SFTConfig(epochs=2, batch_size=8, lr=1e-2, holdout=0.2)
    lean_model, tokenizer = load_causal_lm(tiny_model_dir, dtype="float32")
    lean = sft(lean_model, tokenizer, ROWS, config=config)
    model, _ = load_causal_lm(tiny_model_dir, dtype="float32")
    before = model.model.layers[0].mlp.up_proj.weight.clone()
    steps: list[int] = []
    metrics = trl_sft(model, tokenizer, ROWS, config=config, on_step=lambda s, loss: steps.append(s))
    # The same held-out rows and the same loss (completion tokens and EOS, per token): equal at the start.
    assert metrics["train_rows"] == lean["train_rows"] == 24
    assert metrics["history"][0]["held_out_loss"] == pytest.approx(
        lean["history"][0]["held_out_loss"], rel=1e-4
    )
    losses = [h["held_out_loss"] for h in metrics["history"]]
    assert metrics["held_out_loss"] == min(losses) < losses[0] and len(losses) == 3
    assert steps == list(range(sft_steps(len(ROWS), config))) and metrics["steps"] == 6
    assert metrics["trainer"] == "trl" and json.dumps(metrics)  # the loop writes it as JSON
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, before)  # trained in place


def test_trl_sft_with_lora_merges_the_adapters_into_the_model_passed(tiny_model_dir: Path) -> None:
    model, tokenizer = load_causal_lm(tiny_model_dir, dtype="float32")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = trl_sft(model, tokenizer, ROWS, config=SFTConfig(epochs=1, batch_size=8, lr=1e-2, lora_r=4))
    assert 0 < metrics["trainable_parameters"] < sum(v.numel() for v in before.values()) / 5
    assert not is_peft_model(model) and model.state_dict().keys() == before.keys()
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(model.state_dict()[name], before[name])
    assert torch.equal(model.state_dict()["model.embed_tokens.weight"], before["model.embed_tokens.weight"])


def test_trl_dpo_starts_at_log_2_against_the_starting_model_and_learns_the_preference(
    tiny_model_dir: Path,
) -> None:
    model, tokenizer = load_causal_lm(tiny_model_dir, dtype="float32")
    config = DPOConfig(epochs=4, batch_size=4, lr=1e-2, beta=0.5)
    metrics = trl_dpo(model, None, tokenizer, PAIRS, config=config)
    # No reference given: the starting model is it, so the first loss is exactly log 2 (TRL would
    # otherwise load one from the model's path).
    assert metrics["first_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert metrics["steps"] == dpo_steps(len(PAIRS), config) == 8
    assert metrics["final"]["loss"] < metrics["first_loss"] and metrics["final"]["margin"] > 0
    assert metrics["final"]["accuracy"] > 0.5 and json.dumps(metrics)


def test_trl_dpo_reads_the_reference_it_is_given_and_leaves_it_untouched(tiny_model_dir: Path) -> None:
    model, tokenizer = load_causal_lm(tiny_model_dir, dtype="float32")
    reference, _ = load_causal_lm(tiny_model_dir, dtype="float32")
    with torch.no_grad():  # another policy than the one trained, as the previous round's is
        reference.model.norm.weight.mul_(1.5)
    kept = {k: v.clone() for k, v in reference.state_dict().items()}
    metrics = trl_dpo(model, reference, tokenizer, PAIRS, config=DPOConfig(epochs=1, batch_size=8, lora_r=4))
    assert abs(metrics["first_loss"] - math.log(2)) > 1e-3  # the given reference, not the model itself
    assert all(torch.equal(v, kept[k]) for k, v in reference.state_dict().items())
    assert not is_peft_model(model)


def test_trl_dpo_refuses_step_pairs_and_the_loop_config_refuses_them_before_a_round() -> None:
    from alphallm.loop_config import LoopConfig, build

    step = [Pair(prompt="Q: 1+2\n", chosen="1+2=3\n", rejected="1+2=4\n", terminal=False)]
    with pytest.raises(UserError, match="appends EOS"):
        trl_dpo(None, None, None, step, config=DPOConfig())
    with pytest.raises(UserError, match=r"learn\.trainer: trl appends EOS .*dpo_span: completion"):
        build(LoopConfig, {"learn": {"trainer": "trl", "dpo_span": "step"}})
    assert build(LoopConfig, {"learn": {"trainer": "trl", "dpo_span": "step", "use_dpo": False}})
    with pytest.raises(UserError, match=r"learn\.trainer must be one of \('lean', 'trl'\), not 'trlx'"):
        build(LoopConfig, {"learn": {"trainer": "trlx"}})


def test_a_loop_round_trains_through_trl(tiny_model_dir: Path, tmp_path: Path) -> None:
    from alphallm.loop import Loop
    from alphallm.loop_config import LoopConfig, build

    learn = {"trainer": "trl", "sft": {"epochs": 1, "holdout": 0.0}, "dpo": {"epochs": 1, "lora_r": 4}}
    loop = Loop(build(LoopConfig, {"policy": str(tiny_model_dir), "out_dir": str(tmp_path), "learn": learn}))
    loop.round_dir(1).mkdir(parents=True)
    record = {"sft": ROWS, "pairs": [asdict(p) for p in PAIRS]}
    (loop.round_dir(1) / "data.json").write_text(json.dumps(record))
    sft_record = loop._stage_sft(1)  # type: ignore[attr-defined]
    dpo_record = loop._stage_dpo(1)  # type: ignore[attr-defined]
    assert sft_record["trainer"] == dpo_record["trainer"] == "trl"
    assert (sft_record["rows"], dpo_record["pairs"]) == (len(ROWS), len(PAIRS))
    policy, _ = load_causal_lm(loop.round_dir(1) / "policy", dtype="float32")
    assert not any("lora" in name for name in policy.state_dict())  # a plain model directory
    for stage in ("sft", "policy"):  # TRL turns the KV cache off to train; the saved policies keep it
        assert json.loads((loop.round_dir(1) / stage / "config.json").read_text())["use_cache"] is True


@pytest.mark.parametrize(("trainer", "damaged"), [("sft", "alphallm.pt"), ("dpo", "optimizer.pt")])
def test_trl_training_killed_resumes_from_its_last_whole_checkpoint_to_the_same_weights(
    tiny_model_dir: Path, tmp_path: Path, trainer: str, damaged: str, caplog: pytest.LogCaptureFixture
) -> None:
    from alphallm.lm.loading import model_files
    from alphallm.train.checkpoint import training_checkpoint

    config: Any
    if trainer == "sft":  # 24 rows to train on: 6 steps an epoch
        data: list[Any] = ROWS
        config = SFTConfig(epochs=3, batch_size=4, lr=1e-2, holdout=0.2, checkpoint_every=3)
    else:  # 8 pairs: 4 steps an epoch
        data, config = PAIRS, DPOConfig(epochs=3, batch_size=2, lr=1e-2, checkpoint_every=3)

    def train(checkpoint: Any = None, on_step: Any = None) -> tuple[Any, dict[str, Any]]:
        model, tokenizer = load_causal_lm(tiny_model_dir, dtype="float32")
        if trainer == "sft":
            return model, trl_sft(
                model, tokenizer, data, config=config, on_step=on_step, checkpoint=checkpoint
            )
        metrics = trl_dpo(model, None, tokenizer, data, config=config, on_step=on_step, checkpoint=checkpoint)
        return model, metrics

    def killed_after_step_10(step: int, loss: float) -> None:
        if step == 10:
            raise KeyboardInterrupt

    whole, metrics = train()
    start, _ = load_causal_lm(tiny_model_dir, dtype="float32")
    checkpoint = training_checkpoint(
        tmp_path / "ck", data, config, start=(start, model_files(tiny_model_dir))
    )
    with pytest.raises(KeyboardInterrupt):
        train(checkpoint, killed_after_step_10)
    # transformers kept its checkpoints at steps 6 (SFT: an epoch's end, before its evaluation) and 9. As
    # if killed between its save at 9 and ours, or with a file of its own cut short since:
    newest = tmp_path / "ck" / "checkpoint-9" / damaged
    if damaged == "alphallm.pt":
        newest.unlink()
    else:
        newest.write_bytes(newest.read_bytes()[:100])
    caplog.clear()
    resumed, again = train(checkpoint)
    assert "checkpoint-9 is incomplete or damaged" in caplog.text
    assert again["resumed_at_step"] == 6 and again["steps"] == metrics["steps"]
    assert not (tmp_path / "ck" / f"checkpoint-{metrics['steps']}").exists()  # no save at the last step
    one, two = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(one[k], two[k]) for k in one)
    same = ("history", "held_out_loss") if trainer == "sft" else ("first_loss", "final")
    assert {k: again[k] for k in same} == {k: metrics[k] for k in same}
