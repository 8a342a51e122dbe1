from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import alphallm
from alphallm.cli import main
from alphallm.errors import UserError


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


def test_problems_without_answers_are_refused_by_eval_and_search(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from alphallm.cli import main

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"question": "What is 2+3?", "label": 5}\n')
    for command in ("eval", "search"):
        args = [command, "--task", "gsm8k", "--model", str(tiny_model_dir), "--problems", str(rows)]
        assert main([*args, "--out", str(tmp_path / f"{command}.json")]) == 2
        assert f"{rows}:1: no answer to score solutions against" in capsys.readouterr().err
        assert not (tmp_path / f"{command}.json").exists()


def test_a_problem_longer_than_the_models_positions_is_refused_by_name_before_any_is_solved(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It stopped the batch it fell in with "a text of 805 tokens does not fit the model's 512
    positions", naming no problem, after the batches before it had run."""
    from alphallm.cli import main

    rows = tmp_path / "rows.jsonl"
    short = {"id": "short", "question": "1+2", "answer": "3"}
    rows.write_text(
        json.dumps(short)
        + "\n"
        + json.dumps({"id": "long", "question": "+".join("1" * 400), "answer": "400"})
    )
    for command in ("eval", "search"):
        out = tmp_path / f"{command}.json"
        args = [command, "--task", "arith", "--model", str(tiny_model_dir), "--problems", str(rows)]
        assert main([*args, "--batch-size", "1", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "problem 'long': its prompt is 80" in err and "the model has 512 positions" in err
        assert not out.exists() and not list(tmp_path.glob("*.chunks/*"))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("eval", "--task", "chess"), "unknown task 'chess'"),
        (("eval", "--task", "arith", "--model", "no/such/dir/"), "no such model directory"),
        (("eval", "--task", "arith", "--model", "arith-base", "--n", "0"), "--n must be at least 1"),
        (("eval", "--task", "game24", "--max-tokens", "0"), "--max-tokens must be at least 1"),
        (("eval", "--task", "arith", "--n", "4"), "--n is the samples of --method sample"),
        (
            ("eval", "--task", "arith", "--problems", "p.jsonl", "--split", "dev"),
            "--problems and --split: give one",
        ),
        (
            ("eval-critic", "--critic", "c", "--trees", "t", "--no-reachability"),
            "--no-reachability sets the tool verifier's check",
        ),
        (("eval", "--task", "arith", "--temperature", "-2"), "--temperature must be at least 0"),
        (
            ("search", "--task", "arith", "--method", "greedy", "--readout", "vote"),
            "--readout reads out an eta-MCTS",
        ),
    ],
)
def test_bad_arguments_are_one_line_errors(args: tuple[str, ...], needle: str) -> None:
    result = _cli(*args)
    assert result.returncode == 2
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_every_float_flag_refuses_nan_and_inf(capsys: pytest.CaptureFixture[str]) -> None:
    """``float`` reads 'nan' and 'inf': ``eval --method sample --temperature nan`` died in torch's
    sampler, ``train-critic --lr nan`` in the optimizer, and ``--temperature inf`` sampled uniformly."""
    import argparse

    from alphallm.cli import _build_parser

    parser = _build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    numeric = [
        (name, action.option_strings[-1])
        for name, command in commands.items()
        for action in command._actions
        if action.type is not None
        and action.type not in (int, str)
        and action.option_strings
        and action.type("1.5") == 1.5
    ]
    assert len(numeric) >= 8, numeric  # eval, search, pretrain, train-critic and eval-critic have them
    for name, flag in numeric:
        for value in ("nan", "inf", "-inf"):
            with pytest.raises(SystemExit) as stop:
                parser.parse_args([name, f"{flag}={value}"])
            assert stop.value.code == 2
            assert f"argument {flag}: not a finite number: '{value}'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["eval", "--task", "arith", "--model", ""], "--model"),  # --model "$MODEL" with MODEL unset
        (["search", "--task", "arith", "--problems", ""], "--problems"),
        (["search", "--task", "arith", "--config", ""], "--config"),
        (["compare", "", "b.json"], "A"),
        (["train-critic", "--kind", "orm", "--trees", "t", "", "--base", "b", "--out", "o"], "--trees"),
    ],
)
def test_an_empty_value_is_refused_not_read_as_not_given(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each of these ran on the default (the shipped model, the test split, no config) without a word."""
    from alphallm.cli import main

    assert main(argv) == 2
    assert capsys.readouterr().err == f"alphallm: error: {flag}: empty value\n"


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


def test_train_critic_row_caps_take_zero_for_all_and_refuse_negatives(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trees = tmp_path / "trees"
    trees.mkdir()
    for i in range(12):  # one value label per tree: two verified rollouts below each root
        rollouts = [{"text": "x", "verified": i % 2 == 0}, {"text": "y", "verified": False}]
        nodes = [{"id": 0, "parent": -1, "text": "", "rollouts": rollouts}]
        tree = {"task": "arith", "problem_id": f"p{i}", "root": f"Q: {i}+1\n", "nodes": nodes}
        (trees / f"p{i}.json").write_text(json.dumps(tree))
    train = ["train-critic", "--kind", "value", "--trees", str(trees), "--base", str(tiny_model_dir)]
    train += ["--out", str(tmp_path / "critic"), "--epochs", "1", "--device", "cpu"]
    for flags, message in [
        (["--max-rows", "-5"], "--max-rows must be at least 0 (0: all), not -5"),
        (["--max-held-out-rows", "-1"], "--max-held-out-rows must be at least 0 (0: all), not -1"),
        (["--min-samples", "0"], "--min-samples must be at least 1, not 0"),
    ]:
        assert main([*train, *flags]) == 2
        assert message in capsys.readouterr().err
    evaluate = ["eval-critic", "--critic", "tool", "--kind", "value", "--trees", str(trees)]
    assert main([*evaluate, "--min-samples", "-1"]) == 2
    assert "--min-samples must be at least 1, not -1" in capsys.readouterr().err
    assert main([*train, "--max-rows", "0"]) == 0  # as --max-held-out-rows 0: no cap
    meta = json.loads((tmp_path / "critic" / "critic.json").read_text())
    assert meta["train_rows"] + meta["held_out_rows"] == 12
    # The critic names its trees' task and refuses another task's texts, which it would score meaninglessly.
    assert meta["task"] == "arith"
    game24 = tmp_path / "game24.json"
    root = {"id": 0, "parent": -1, "text": ""}
    tree = {"task": "game24", "problem_id": "g", "root": "4 9 10 13\n", "nodes": [root]}
    game24.write_text(json.dumps(tree))
    assert main(["eval-critic", "--critic", str(tmp_path / "critic"), "--trees", str(game24)]) == 2
    refused = f"{tmp_path / 'critic'}: a critic trained on arith trees, given game24 problems"
    assert refused in capsys.readouterr().err
    from alphallm.critics.learned import load_critics
    from alphallm.tasks import get_task

    with pytest.raises(UserError, match=re.escape(refused)):
        load_critics({"value": str(tmp_path / "critic")}, task=get_task("game24"), device="cpu")


def test_eval_refuses_a_batch_size_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    for size in ("0", "-3"):  # -3 once reported accuracy 0 on 0 records
        assert main(["eval", "--task", "arith", "--model", "no/such/dir/", "--batch-size", size]) == 2
        assert capsys.readouterr().err == "alphallm: error: --batch-size must be at least 1\n"


def test_output_paths_are_refused_before_the_model_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The model does not exist: an error about the output shows it was checked before any work.
    (tmp_path / "existing.txt").write_text("x")
    (tmp_path / "outdir").mkdir()
    below_a_file = tmp_path / "existing.txt" / "x.json"
    for command in ("eval", "search"):
        base = [command, "--task", "arith", "--model", "no/such/dir/"]
        assert main([*base, "--out", str(tmp_path / "outdir")]) == 2
        assert (
            capsys.readouterr().err
            == f"alphallm: error: {tmp_path / 'outdir'}: is a directory; name a file to write\n"
        )
        assert main([*base, "--out", str(below_a_file)]) == 2
        err = capsys.readouterr().err
        assert f"{below_a_file}: cannot write ({tmp_path / 'existing.txt'} is not a directory)" in err
    trees = tmp_path / "existing.txt"
    assert main(["search", "--task", "arith", "--model", "no/such/dir/", "--save-trees", str(trees)]) == 2
    assert (
        f"{trees} exists and is not a trees directory; choose another --save-trees" in capsys.readouterr().err
    )
    assert main(["viz", str(tmp_path / "missing"), "--out", str(tmp_path / "outdir")]) == 2  # inputs first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.txt", "outdir"]


def test_search_saves_trees_under_safe_distinct_names(tiny_model_dir: Path, tmp_path: Path) -> None:
    problems = tmp_path / "problems.jsonl"
    ids = ["sub/x", "../../escaped", "sub_x"]  # the first two once wrote outside the trees directory
    problems.write_text("".join(json.dumps({"problem": "1+2", "id": i}) + "\n" for i in ids))
    trees, out = tmp_path / "deep" / "trees", tmp_path / "res.json"
    args = ["search", "--task", "arith", "--model", str(tiny_model_dir), "--problems", str(problems)]
    args += ["--method", "greedy", "--max-tokens", "4", "--save-trees", str(trees), "--out", str(out)]
    assert main(args) == 0
    assert sorted(p.name for p in trees.glob("*.json")) == ["_.._escaped.json", "sub_x-2.json", "sub_x.json"]
    assert sorted(json.loads(p.read_text())["problem_id"] for p in trees.glob("*.json")) == sorted(ids)
    assert sorted(p.name for p in trees.iterdir() if p.suffix != ".json") == ["search.yaml"]
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["trees"]
    assert [r["problem_id"] for r in json.loads(out.read_text())["results"]] == ids


def test_search_writes_its_results_before_the_trees(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alphallm.commands import search_cmd
    from alphallm.errors import UserError

    def disk_full(report: object, directory: Path, **about: str) -> None:
        raise UserError(f"{directory}: cannot write (No space left on device)")

    monkeypatch.setattr(search_cmd, "_save_trees", disk_full)
    out = tmp_path / "res.json"
    args = ["search", "--task", "arith", "--model", str(tiny_model_dir), "--limit", "2", "--method", "greedy"]
    assert main([*args, "--max-tokens", "4", "--save-trees", str(tmp_path / "t"), "--out", str(out)]) == 2
    assert json.loads(out.read_text())["problems"] == 2


def test_default_result_names_tell_loop_rounds_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from alphallm.commands.eval_cmd import default_out, model_label

    monkeypatch.chdir(tmp_path)
    for k in (1, 2):
        (tmp_path / "runs" / "demo" / f"round-{k}" / "policy").mkdir(parents=True)
    names = {default_out("eval", "arith", f"runs/demo/round-{k}/policy", "greedy").name for k in (1, 2)}
    assert names == {"arith-demo-round-1-policy-greedy.json", "arith-demo-round-2-policy-greedy.json"}
    assert model_label(str(tmp_path / "runs" / "demo" / "round-1" / "policy")) == "demo-round-1-policy"
    # shipped names and hub ids (not local directories) keep their last part
    assert default_out("search", "arith", "arith-base", "mcts") == Path(
        "runs/search/arith-arith-base-mcts.json"
    )
    assert model_label("Qwen/Qwen2.5-0.5B") == "Qwen2.5-0.5B"


def test_a_run_on_other_or_fewer_problems_keeps_the_test_splits_results(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quick check on the dev split, a few problems or a file of one's own once overwrote the test split's
    results, which `compare` then read as the model's test accuracy."""
    from alphallm.commands.eval_cmd import model_label
    from alphallm.tasks import ArithTask

    monkeypatch.chdir(tmp_path)
    Path("mine.jsonl").write_text('{"problem": "2+3"}\n')
    model = ["--model", str(tiny_model_dir), "--max-tokens", "4"]
    runs = [[], ["--split", "dev", "--limit", "2"], ["--limit", "3"], ["--problems", "mine.jsonl"]]
    for command in ("eval", "search"):
        for flags in runs:
            limit = [] if flags or command == "eval" else ["--limit", "5"]  # a short search: its own label
            assert main([command, "--task", "arith", "--method", "greedy", *model, *limit, *flags]) == 0
        named = {p.name: json.loads(p.read_text())["problems"] for p in Path("runs", command).glob("*.json")}
        whole = len(ArithTask().problems("test")) if command == "eval" else 5
        name = f"arith-{model_label(str(tiny_model_dir))}-greedy-tok4"
        assert named == {
            name + ("" if command == "eval" else "-first5") + ".json": whole,
            f"{name}-dev-first2.json": 2,
            f"{name}-first3.json": 3,
            f"{name}-mine.json": 1,
        }


def test_runs_with_other_settings_write_other_results(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Comparing budgets, or a search without the verifier against one with it, by hand: each run once
    overwrote the one before, since only the method named the file."""
    from alphallm.commands.eval_cmd import model_label

    monkeypatch.chdir(tmp_path)
    Path("mine.yaml").write_text("rollouts: 0\n")
    base = ["--task", "arith", "--model", str(tiny_model_dir), "--limit", "2", "--max-tokens", "4"]
    searches = [[], ["--simulations", "3"], ["--weight", "tool=0", "--seed", "2"], ["--config", "mine.yaml"]]
    for flags in searches:
        assert main(["search", *base, *flags]) == 0
    for flags in ([], ["--temperature", "0.5"]):
        assert main(["eval", *base, "--method", "sample", "--n", "2", *flags]) == 0
    name = f"arith-{model_label(str(tiny_model_dir))}"
    assert sorted(p.name for p in Path("runs/search").glob("*.json")) == [
        f"{name}-mcts-mine-tok4-first2.json",
        f"{name}-mcts-s3-tok4-first2.json",
        f"{name}-mcts-tok4-first2.json",
        f"{name}-mcts-tok4-tool0-seed2-first2.json",
    ]
    assert sorted(p.name for p in Path("runs/eval").glob("*.json")) == [
        f"{name}-sample-n2-t0.5-tok4-first2.json",
        f"{name}-sample-n2-tok4-first2.json",
    ]


def test_a_runs_kept_policy_is_evaluated_and_named_as_what_it_links_to(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link moves on as the run does: results named after it would be overwritten by a later round's."""
    from alphallm.cli import main
    from alphallm.lm.loading import SHIPPED_MODELS_DIR

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir, tmp_path / "runs" / "demo" / "round-2" / "sft")
    link = Path("runs/demo/kept-policy")
    link.symlink_to("round-2/sft")
    for command in ("eval", "search"):
        assert (
            main([command, "--task", "arith", "--model", str(link), "--limit", "2", "--method", "greedy"])
            == 0
        )
        result = Path(f"runs/{command}/arith-demo-round-2-sft-greedy-first2.json")
        assert json.loads(result.read_text())["model"] == "runs/demo/round-2/sft"
    link.unlink()
    link.symlink_to(SHIPPED_MODELS_DIR / "arith-base")  # the starting policy, kept: by its shipped name
    assert main(["eval", "--task", "arith", "--model", str(link), "--limit", "2"]) == 0
    result = Path("runs/eval/arith-arith-base-greedy-first2.json")
    assert json.loads(result.read_text())["model"] == "arith-base"


def test_a_missing_optional_dependency_names_the_extra_that_installs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from alphallm.extras import missing_extra

    # The extras are read from the package's metadata (pyproject.toml), not from a second list.
    assert [missing_extra(m) for m in ("peft", "trl.trainer", "ray", "matplotlib", "numpy", None)] == [
        "train",
        "train",
        "ray",
        "plot",
        None,
        None,
    ]
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: importing it fails
    args = ["search", "--task", "arith", "--limit", "2", "--ray", "--out", str(tmp_path / "r.json")]
    assert main(args) == 2
    assert capsys.readouterr().err == "alphallm: error: this needs ray: pip install 'alphallm[ray]'\n"
    # A loop config that needs an extra says so when it loads, not at its first training stage.
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name))
    from alphallm.loop_config import LoopConfig, build

    needs = "learn.sft.lora_r: needs peft (pip install 'alphallm[train]')"
    with pytest.raises(UserError, match=re.escape(needs)):
        build(LoopConfig, {"task": "arith", "learn": {"sft": {"lora_r": 4}}})

    # A core dependency missing is a broken install, shown whole. (Raised where the command runs: an
    # import of numpy may not run again in a process that has loaded alphallm's modules already.)
    def broken(*args: object) -> None:
        raise ModuleNotFoundError("No module named 'numpy'", name="numpy")

    monkeypatch.setattr("alphallm.commands.eval_cmd.select_problems", broken)
    with pytest.raises(ModuleNotFoundError):
        main(["search", "--task", "arith", "--limit", "2", "--out", str(tmp_path / "n.json")])


def test_the_report_is_written_without_plots_when_matplotlib_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from alphallm.report.run_report import write_report

    real = importlib.util.find_spec

    def find_spec(name: str, *rest: object) -> object:
        return None if name == "matplotlib" else real(name, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    metrics = [{"round": 0, "greedy": {"accuracy": 0.5, "tokens_per_problem": 10.0}}]
    page = write_report(tmp_path, metrics, policies={0: "arith-base"})
    assert "No plots: matplotlib is not installed" in page.read_text()
    assert not (tmp_path / "report" / "accuracy.png").exists()
