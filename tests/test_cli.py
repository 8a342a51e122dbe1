from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import alphallm
from alphallm.cli import main


def test_eval_writes_json_and_log(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "res.json"
    status = main(
        [
            "eval",
            "--task",
            "arith",
            "--model",
            str(tiny_model_dir),
            "--limit",
            "3",
            "--method",
            "sample",
            "--n",
            "2",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    data = json.loads(out.read_text())
    assert data["problems"] == 3 and len(data["records"]) == 6
    assert {"accuracy", "pass@2", "maj@2"} <= set(data["metrics"])
    assert data["usage"]["generated_tokens"] == sum(r["tokens"] for r in data["records"])
    log = (tmp_path / "log.jsonl").read_text().splitlines()
    assert json.loads(log[-1])["metrics"] == data["metrics"]
    assert "accuracy" in capsys.readouterr().out


def test_progress_in_a_log_file_is_a_plain_line_at_every_tenth(capsys: pytest.CaptureFixture[str]) -> None:
    from alphallm.commands._ui import progress_bar

    with progress_bar("pretrain arith", 25) as advance:
        for _ in range(25):
            advance(1)
    lines = capsys.readouterr().out.splitlines()
    # 3, 5, 8, ... 25 of 25: the first step past each tenth, each once
    assert [line.split(" (")[0] for line in lines] == [
        f"pretrain arith: {k}/25" for k in (3, 5, 8, 10, 13, 15, 18, 20, 23, 25)
    ]
    assert all(line.endswith(" elapsed)") for line in lines)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alphallm", *args], capture_output=True, text=True, timeout=120
    )


def test_malformed_problems_file_is_one_line_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+2"}\n{"problem": 12}\n')
    result = _cli("eval", "--task", "arith", "--model", str(tiny_model_dir), "--problems", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"{bad}:2:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("eval", "--task", "chess"), "unknown task 'chess'"),
        (("eval", "--task", "arith", "--model", "no/such/dir/"), "no such model directory"),
        (("eval", "--task", "arith", "--model", "arith-base", "--n", "0"), "--n must be at least 1"),
        (("eval", "--task", "game24", "--max-tokens", "0"), "--max-tokens must be at least 1"),
    ],
)
def test_bad_arguments_are_one_line_errors(args: tuple[str, ...], needle: str) -> None:
    result = _cli(*args)
    assert result.returncode == 2
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_library_progress_bars_stay_out_of_a_log_file(tmp_path: Path, tiny_model_dir: Path) -> None:
    # stderr is a pipe here, as in a nohup log: transformers' "Loading weights" bar would land in it
    out = tmp_path / "res.json"
    args = ("eval", "--task", "arith", "--model", str(tiny_model_dir), "--limit", "2", "--out", str(out))
    result = _cli(*args)
    assert result.returncode == 0, result.stderr
    assert "Loading weights" not in result.stderr and "it/s]" not in result.stderr, result.stderr
    assert json.loads(out.read_text())["problems"] == 2


def test_every_shipped_loop_config_loads() -> None:
    # `alphallm demo` is the README's main command: a typo in its packaged config would break it, and no
    # other test reads those files or the repository's configs/improve ones
    from alphallm.commands.improve_cmd import DEMO_TASKS
    from alphallm.loop_config import load_config

    package = Path(alphallm.__file__).parent / "configs"
    assert sorted(p.name for p in package.glob("*.yaml")) == sorted(f"demo-{t}.yaml" for t in DEMO_TASKS)
    for task in DEMO_TASKS:
        config = load_config(package / f"demo-{task}.yaml")
        assert (config.task, config.name, config.policy) == (task, f"demo-{task}", f"{task}-base")
    repository = sorted((Path(__file__).parents[1] / "configs" / "improve").glob("*.yaml"))
    assert len(repository) == 5  # arith, arith-small, game24, game24-retry, game24-small
    for path in repository:
        assert load_config(path).rounds >= 5


def test_eval_max_tokens_caps_every_solution(tiny_model_dir: Path, tmp_path: Path) -> None:
    # the random tiny model never ends a solution by itself: each one runs to the cap
    out = tmp_path / "res.json"
    args = ["eval", "--task", "game24", "--model", str(tiny_model_dir), "--limit", "3", "--out", str(out)]
    assert main([*args, "--max-tokens", "7"]) == 0
    assert [r["tokens"] for r in json.loads(out.read_text())["records"]] == [7, 7, 7]
