"""The loop on tasks that ship no generator or no dev/test split (gsm8k, math): training, dev and test
problems come from the user's JSONL files, and no dev or test item ever enters training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from alphallm.errors import UserError
from alphallm.loop import Loop, Quiet
from alphallm.loop_config import LoopConfig, build
from alphallm.tasks import get_task


def _gsm8k_rows(numbers: range) -> list[dict[str, str]]:
    return [
        {
            "question": f"Tom has {n} apples and buys {n + 1} more. How many apples does he have?",
            "answer": f"{n}+{n + 1}=<<{n}+{n + 1}={2 * n + 1}>>{2 * n + 1}\n#### {2 * n + 1}",
        }
        for n in numbers
    ]


class _Recorder(Quiet):
    """The loop's UI, keeping its messages."""

    def __init__(self) -> None:
        self.said: list[str] = []

    def message(self, text: str) -> None:
        self.said.append(text)


def _write(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _config(tmp_path: Path, policy: Path, **files: str) -> dict[str, Any]:
    mcts = {"num_simulations": 2, "max_depth": 2}
    search = {"rollouts": 0, "batch_size": 6, "max_tokens": 24, "mcts": mcts}
    return {
        "name": "files",
        "task": "gsm8k",
        "policy": str(policy),
        "rounds": 2,
        "out_dir": str(tmp_path / "runs"),
        "imagine": {"problems": 5, "imagined_fraction": 0.0, "problems_file": files.get("train")},
        "search": search,
        "learn": {"sft": {"epochs": 1, "batch_size": 4, "holdout": 0.0}},
        "critics": {"kinds": ["orm"], "train": {"epochs": 1, "batch_size": 8}},
        "evaluate": {
            "test_problems": 3,
            "search_problems": 2,
            "dev_problems": 3,
            "max_tokens": 24,
            "self_consistency": False,
            "search": search,
            "dev_file": files.get("dev"),
            "test_file": files.get("test"),
        },
    }


def test_gsm8k_runs_on_the_users_files_and_keeps_dev_and_test_items_out(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    train, dev, test = _gsm8k_rows(range(1, 9)), _gsm8k_rows(range(20, 23)), _gsm8k_rows(range(40, 43))
    shipped_test = get_task("gsm8k").problems("test")[0]
    leaked = [dev[0], test[0], {"question": shipped_test.question, "answer": f"#### {shipped_test.answer}"}]
    files = {
        "train": _write(tmp_path / "train.jsonl", train + leaked),
        "dev": _write(tmp_path / "dev.jsonl", dev),
        "test": _write(tmp_path / "test.jsonl", test),
    }
    loop = Loop(build(LoopConfig, _config(tmp_path, tiny_model_dir, **files)), ui=_Recorder())
    metrics = loop.run()

    # As each stage ends, one line says what it did, from the record it wrote.
    said = loop.ui.said  # type: ignore[attr-defined]
    for k in (1, 2):
        data = json.loads((loop.round_dir(k) / "data.json").read_text())
        rows = f"{len(data['sft'])} SFT rows and {len(data['pairs'])} DPO pairs"
        ended = [m for m in said if m.startswith(f"round {k}: data done in ")]
        assert len(ended) == 1
        assert ended[0].endswith(f": {rows} from {data['solved']} of {data['problems']} problems solved")
        assert sum(m.startswith(f"round {k}: ") and " done in " in m for m in said) == 8
    greedy = metrics[2]["greedy"]["accuracy"]
    assert said[-1].startswith("round 2: evaluate done in ") and f"greedy {greedy:.3f}" in said[-1]

    rounds = [[json.loads(line) for line in (loop.round_dir(k) / "problems.jsonl").open()] for k in (1, 2)]
    # Round 1 draws 5 of the file's 8 training problems; round 2, new ones only, gets the 3 left.
    assert [len(r) for r in rounds] == [5, 3]
    drawn = [p["question"] for r in rounds for p in r]
    assert sorted(drawn) == sorted(row["question"] for row in train)
    # The dev, test and shipped test items in the training file never enter training.
    assert not {row["question"] for row in leaked} & set(drawn)
    assert json.loads((loop.round_dir(2) / "imagine.json").read_text())["from_file"] == 3
    # Evaluation runs on the test file (ids from its name and line), the gate on the dev file.
    assert list(metrics[2]["greedy"]["solved"]) == ["test-1", "test-2", "test-3"]
    assert [p.question for p in loop.split_problems("dev")] == [row["question"] for row in dev]


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ({"answer": "#### 3"}, "question"),
        # a dev problem is scored by the gate; training problems may lack answers (the train file's does)
        ({"question": "What is 1 plus 2?", "label": 3}, "no answer to score solutions against"),
    ],
)
def test_a_bad_row_in_the_dev_file_stops_the_run_before_its_first_stage(
    tiny_model_dir: Path, tmp_path: Path, bad_row: dict[str, object], message: str
) -> None:
    unanswered = {"question": "What is 4 plus 5?"}
    files = {
        "train": _write(tmp_path / "train.jsonl", [*_gsm8k_rows(range(1, 4)), unanswered]),
        "dev": _write(tmp_path / "dev.jsonl", [*_gsm8k_rows(range(5, 7)), bad_row]),
    }
    loop = Loop(build(LoopConfig, _config(tmp_path, tiny_model_dir, **files)))
    with pytest.raises(UserError, match=rf"dev\.jsonl:3: .*{message}"):
        loop.run()
    assert not loop.round_dir(0).exists()
    assert loop.split_problems("train")[-1].answer is None


@pytest.mark.parametrize(
    ("task", "given", "missing"),
    [
        ("gsm8k", {}, "imagine.problems_file: task 'gsm8k' has no problem generator"),
        ("gsm8k", {"train"}, "evaluate.dev_file: task 'gsm8k' ships no dev split"),
        ("math", {"train", "dev"}, "evaluate.test_file: task 'math' ships no test split"),
    ],
)
def test_a_task_without_a_generator_or_a_split_names_the_file_it_needs(
    tmp_path: Path, task: str, given: set[str], missing: str
) -> None:
    rows = [{"problem": "1+1?", "solution": "\\boxed{2}"}] if task == "math" else _gsm8k_rows(range(1, 3))
    files = {name: _write(tmp_path / f"{name}.jsonl", rows) for name in given}
    data = {**_config(tmp_path, tmp_path, **files), "task": task}
    with pytest.raises(UserError, match=missing):
        build(LoopConfig, data)


def test_a_missing_problems_file_stops_the_run_before_its_first_stage(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    files = {
        "train": str(tmp_path / "nope.jsonl"),
        "dev": _write(tmp_path / "dev.jsonl", _gsm8k_rows(range(2))),
    }
    loop = Loop(build(LoopConfig, _config(tmp_path, tiny_model_dir, **files)))
    with pytest.raises(UserError, match=r"nope\.jsonl: no such problems file"):
        loop.run()
    assert not loop.round_dir(0).exists()


def test_the_readmes_gsm8k_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    import yaml

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    found = re.search(r"```yaml\n(# gsm8k with a real model.*?)```", readme, re.S)
    assert found, "README.md lost its gsm8k loop config"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gsm8k").mkdir()
    for name in ("train", "dev"):
        _write(tmp_path / "gsm8k" / f"{name}.jsonl", _gsm8k_rows(range(1, 3)))
    config = build(LoopConfig, yaml.safe_load(found.group(1)))
    assert (config.task, config.learn.sft.lora_r) == ("gsm8k", 16)
    assert config.evaluate.dev_file == "gsm8k/dev.jsonl"


def test_the_loop_puts_every_prompt_in_the_chat_template(tiny_chat_model_dir: Path, tmp_path: Path) -> None:
    from alphallm.lm.loading import load_causal_lm

    model_dir = tiny_chat_model_dir
    template = load_causal_lm(model_dir)[1].chat_template
    files = {
        "train": _write(tmp_path / "train.jsonl", _gsm8k_rows(range(1, 6))),
        "dev": _write(tmp_path / "dev.jsonl", _gsm8k_rows(range(20, 22))),
    }
    data = {**_config(tmp_path, model_dir, **files), "rounds": 1, "chat_template": True}
    # The policy also imagines, from two of the file's problems in the user's turn (the random model
    # writes nothing valid, so the file fills the round).
    data["imagine"] = {**data["imagine"], "imagined_fraction": 0.4, "examples": 2}
    loop = Loop(build(LoopConfig, data))
    loop.run()
    imagined = json.loads((loop.round_dir(1) / "imagine.json").read_text())["imagined"]
    assert imagined["sampled"] > 0 and imagined["kept"] == 0
    roots = [tree["root"] for tree in loop.trees(range(1, 2))]
    assert len(roots) == 5
    assert all(r.startswith("<|user|>Question: ") and r.endswith("Solution:\n<|assistant|>") for r in roots)
    # The round's policy keeps the template, so the next round's prompts are the same.
    assert load_causal_lm(loop.policy(1))[1].chat_template == template


def test_problems_without_an_answer_the_policy_agrees_on_are_dropped_before_the_search(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # math rows need no answer; the random model agrees on none, so no problem is left to search.
    unanswered = [{"problem": f"What is {n} plus {n + 1}?"} for n in range(4)]
    answered = [{"problem": "What is 1 plus 1?", "answer": "2"}]
    files = {
        "train": _write(tmp_path / "train.jsonl", unanswered),
        "dev": _write(tmp_path / "dev.jsonl", answered),
        "test": _write(tmp_path / "test.jsonl", answered),
    }
    data = {**_config(tmp_path, tiny_model_dir, **files), "task": "math", "rounds": 1}
    data["imagine"] = {**data["imagine"], "answer_samples": 2}
    loop = Loop(build(LoopConfig, data))
    with pytest.raises(UserError, match=r"round 1: .*left no new problems with an agreed answer"):
        loop.run()
    assert not (loop.round_dir(1) / "imagine.json").exists()
