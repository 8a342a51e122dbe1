"""The loop's settings and the improve command's flags: every bad value is one line naming its key
or flag, and a run that bad input stops before any stage leaves no directory behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from test_loop import TINY


def test_config_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from alphallm.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**TINY, "learn": {"sft": {"epocs": 2}}}))
    assert main(["improve", "--config", str(config)]) == 2
    assert "learn.sft: unknown setting(s): epocs (did you mean 'epochs'?)" in capsys.readouterr().err
    config.write_text(yaml.safe_dump({**TINY, "rounds": 0}))
    assert main(["improve", "--config", str(config)]) == 2
    assert "rounds must be at least 1" in capsys.readouterr().err


def test_learn_settings_refuse_bad_values() -> None:
    from alphallm.errors import UserError
    from alphallm.loop_config import LoopConfig, build

    config = build(LoopConfig, {**TINY, "learn": {"sft_from": "start"}, "imagine": {"fresh": False}})
    assert config.learn.sft_from == "start" and not config.imagine.fresh
    with pytest.raises(UserError, match=r"learn: learn\.sft_from must be one of"):
        build(LoopConfig, {**TINY, "learn": {"sft_from": "scratch"}})
    with pytest.raises(UserError, match=r"needs learn\.replay: true"):
        build(LoopConfig, {**TINY, "learn": {"sft_from": "start", "replay": False}})
    with pytest.raises(UserError, match=r"learn\.solutions_per_problem must be at least 1"):
        build(LoopConfig, {**TINY, "learn": {"solutions_per_problem": 0}})
    negatives = {"kinds": ["orm"], "train": {"negatives": 2}}
    assert build(LoopConfig, {**TINY, "critics": negatives}).critics.train.negatives == 2
    with pytest.raises(UserError, match=r"task 'game24' writes no wrong solutions"):
        build(LoopConfig, {**TINY, "task": "game24", "policy": "game24-base", "critics": negatives})
    with pytest.raises(UserError, match=r"negatives must be non-negative"):
        build(LoopConfig, {**TINY, "critics": {"train": {"negatives": -1}}})
    with pytest.raises(UserError, match=r"imagine\.answer_samples must be at least 0, answer_agreement"):
        build(LoopConfig, {**TINY, "imagine": {"answer_agreement": 0.0}})
    # A gap of success rates above 1 pairs nothing; a negative seed stopped the first search, in numpy.
    with pytest.raises(UserError, match=r"learn\.dpo_min_gap must be in \[0, 1\], not 2"):
        build(LoopConfig, {**TINY, "learn": {"dpo_min_gap": 2.0}})
    with pytest.raises(UserError, match=r"seed must be at least 0, not -1"):
        build(LoopConfig, {**TINY, "seed": -1})
    with pytest.raises(UserError, match=r"search: .*seed must be at least 0, not -3"):
        build(LoopConfig, {**TINY, "search": {"seed": -3}})
    # A stage's own seed was ignored without a word: the loop seeds every stage from `seed`.
    with pytest.raises(UserError, match=r"^config: learn\.sft\.seed, critics\.train\.seed: the loop seeds"):
        build(LoopConfig, {**TINY, "learn": {"sft": {"seed": 3}}, "critics": {"train": {"seed": 1}}})
    # Range checks that stopped a stage deep in torch or numpy, or silently did nothing.
    for section, bad, message in [
        ("learn", {"dpo_pairs_per_tree": 0}, r"dpo_pairs_per_tree must be at least 1"),
        ("learn", {"sft": {"weight_decay": -1.0}}, r"weight_decay must be non-negative"),
        ("learn", {"dpo": {"max_length": 0}}, r"max_length must be at least 1"),
        ("critics", {"train": {"max_rows": 0}}, r"max_rows must be positive"),
        ("imagine", {"temperature": 0.0}, r"imagine\.temperature must be above 0"),
        ("evaluate", {"sc_temperature": -1.0}, r"evaluate\.sc_temperature must be above 0"),
    ]:
        with pytest.raises(UserError, match=message):
            build(LoopConfig, {**TINY, section: {**TINY.get(section, {}), **bad}})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rounds": 2.5}, "rounds: expected an integer, not 2.5"),
        ({"seed": "abc"}, "seed: expected an integer, not 'abc'"),
        ({"chat_template": "no"}, "chat_template: expected true or false, not 'no'"),
        ({"imagine": 5}, "imagine: expected a mapping, not 5"),
        ({"learn": {"retry_mix": "0.5"}}, "learn.retry_mix: expected a list, not '0.5'"),
        ({"evaluate": {"test_problems": -5}}, "evaluate.test_problems must be at least 1, not -5"),
        ({"evaluate": {"test_problems": 0}}, "evaluate.test_problems must be at least 1, not 0"),
        ({"evaluate": {"sc_temperature": "hot"}}, "evaluate.sc_temperature: expected a finite number"),
        ({"critics": {"min_samples": 0}}, "critics.min_samples must be at least 1, not 0"),
        ({"search": {"mcts": 48}}, "search.mcts: expected a mapping, not 48"),
        ({"search": {"prune": "no"}}, "search.prune: expected true or false, not 'no'"),
        ({"search": {"mcts": {"num_simulations": 2.5}}}, "search.mcts.num_simulations: expected an integer"),
        ({"search": {"weights": {"rolout": 1.0}}}, "weights: unknown critic 'rolout'"),
        (
            {"imagine": {"difficulty": {"min_opps": 4}}},
            "imagine.difficulty: unknown key(s) min_opps for task",
        ),
        ({"imagine": {"difficulty": {"min_ops": 9, "max_ops": 6}}}, "min_ops 9 is above max_ops 6"),
        (
            {"imagine": {"difficulty": {"min_ops": 7}}},
            "imagine.difficulty: min_ops 7 must lie in 1..max_ops (5)",
        ),
        ({"imagine": {"difficulty": {"max_operand": 0}}}, "max_operand and max_value must be at least 1"),
        ({"imagine": {"difficulty": {"min_ops": 2.5}}}, "imagine.difficulty.min_ops: expected an integer"),
        ({"name": "../elsewhere"}, "name must be a plain directory name"),
        ({"name": ""}, "name must be a plain directory name"),
    ],
)
def test_loop_settings_are_type_checked_by_their_dotted_key(change: dict, message: str) -> None:
    import re

    from alphallm.errors import UserError
    from alphallm.loop_config import LoopConfig, build

    with pytest.raises(UserError, match=re.escape(message)):
        build(LoopConfig, {**TINY, **change})
    # ints stand for floats; a difficulty the generator reads passes
    ok = build(
        LoopConfig, {**TINY, "evaluate": {"sc_temperature": 1}, "imagine": {"difficulty": {"min_ops": 3}}}
    )
    assert ok.imagine.difficulty == {"min_ops": 3}


def test_improve_flags_that_are_given_are_never_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from alphallm.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**TINY, "out_dir": str(tmp_path / "runs")}))
    improve = ["improve", "--config", str(config)]
    for flags, message in [
        (["--rounds", "0"], "--rounds must be at least 1, not 0"),
        (["--name", ""], "--name: empty value"),  # cli._empty_flag, for every command
        (["--name", " "], "--name: empty value"),
        (["--out-dir", " "], "--out-dir: empty value"),
        (["--name", "../x"], "--name must be a plain directory name"),
        (["--resume", "--name", "typo"], f"{tmp_path / 'runs' / 'typo'}: no run to resume"),
    ]:
        assert main([*improve, *flags]) == 2
        assert message in capsys.readouterr().err
    # demo --resume without a demo run to resume started a new one
    assert main(["demo", "--resume", "--out-dir", str(tmp_path / "runs")]) == 2
    assert f"{tmp_path / 'runs' / 'demo-game24'}: no run to resume" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_new_run_with_bad_input_leaves_no_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rerun with the input fixed must not be told to --resume a run that never ran."""
    from alphallm.cli import main
    from alphallm.errors import UserError

    config = tmp_path / "c.yaml"
    runs = tmp_path / "runs"
    for change, message in [
        ({"policy": "no-such-model"}, "policy: no-such-model: no such model directory"),
        ({"imagine": {"problems_file": str(tmp_path / "missing.jsonl")}}, "missing.jsonl"),
        ({"evaluate": {"test_file": str(tmp_path / "missing.jsonl")}}, "missing.jsonl"),
    ]:
        config.write_text(yaml.safe_dump({**TINY, "out_dir": str(runs), **change}))
        assert main(["improve", "--config", str(config)]) == 2
        assert message in capsys.readouterr().err
        assert not (runs / "tiny").exists()

    def fail(*args: object, **kwargs: object) -> None:
        raise UserError("bad input found in the first stage")

    monkeypatch.setattr("alphallm.loop.evaluate_round", fail)  # after the run's record is written
    config.write_text(yaml.safe_dump({**TINY, "out_dir": str(runs)}))
    assert main(["improve", "--config", str(config)]) == 2
    assert "bad input found in the first stage" in capsys.readouterr().err
    assert not (runs / "tiny").exists()


def test_a_retired_setting_in_a_saved_or_copied_config_is_dropped_with_a_word(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """critics.weight was never read; runs saved it in their config.yaml, which users copy to start
    new runs. Such a config still loads, says the setting is gone, and a resume records no change."""
    from alphallm.loop_config import LoopConfig, build
    from alphallm.loop_meta import _changed

    config = build(LoopConfig, {**TINY, "critics": {**TINY["critics"], "weight": 1.0}})
    assert config.critics.kinds == TINY["critics"]["kinds"]
    assert "critics.weight is no longer a setting and is ignored" in caplog.text
    before = {"critics": {"weight": 1.0, "kinds": ["orm"]}, "rounds": 2}
    after = {"critics": {"kinds": ["orm"]}, "rounds": 3}
    defaults = {"critics": {"kinds": ["value", "prm", "orm"]}, "rounds": 5}
    assert _changed(before, after, defaults) == ["rounds: 2 -> 3"]


def test_the_default_policy_and_model_are_the_tasks_shipped_model(capsys: pytest.CaptureFixture[str]) -> None:
    """A config that sets only ``task: game24`` started from arith-base, the arith model, and searched
    game24 with it to nothing; a task that ships no model named one the user never gave."""
    from alphallm.cli import main
    from alphallm.commands.eval_cmd import chosen_model
    from alphallm.errors import UserError
    from alphallm.loop_config import LoopConfig, build

    given = {key: value for key, value in TINY.items() if key != "policy"}
    assert build(LoopConfig, {**given, "task": "game24"}).policy == "game24-base"
    assert build(LoopConfig, given).policy == "arith-base"
    assert chosen_model(None, "game24") == "game24-base"
    with pytest.raises(
        UserError, match="policy: task 'gsm8k' ships no model; set policy to a model directory"
    ):
        build(LoopConfig, {**given, "task": "gsm8k", "imagine": {"problems_file": "train.jsonl"}})
    assert main(["eval", "--task", "gsm8k", "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert "--model: task 'gsm8k' ships no model; name a model directory, hub id or server URL" in err
