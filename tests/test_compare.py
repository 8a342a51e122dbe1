"""``alphallm compare``: paired differences between results, read from the files commands write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alphallm.cli import main
from alphallm.errors import UserError


def _run_dir(tmp_path: Path, rounds: list[list[int]]) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    lines = []
    for k, solved in enumerate(rounds):
        outcomes = {f"p{i}": s for i, s in enumerate(solved)}
        lines.append(
            json.dumps({"round": k, "greedy": {"accuracy": sum(solved) / len(solved), "solved": outcomes}})
        )
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run


def test_compare_reads_search_and_eval_results_as_the_commands_write_them(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from alphallm.report.compare import compare, load_outcomes

    common = ["--task", "arith", "--model", str(tiny_model_dir), "--limit", "4"]
    assert main(["search", *common, "--method", "greedy", "--out", str(tmp_path / "s.json")]) == 0
    assert main(["eval", *common, "--method", "sample", "--n", "2", "--out", str(tmp_path / "e.json")]) == 0
    search, sampled = load_outcomes(tmp_path / "s.json"), load_outcomes(tmp_path / "e.json")
    assert list(search) == ["greedy"] and len(search["greedy"]) == 4
    assert set(sampled["sample"].values()) <= {0.0, 0.5, 1.0}  # two samples per problem: fractions
    [row] = compare(search, sampled)
    assert row["label"] == "greedy / sample" and row["problems"] == 4
    assert row["change"] == pytest.approx(row["after"] - row["before"])
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "s.json"), str(tmp_path / "e.json")]) == 0
    assert "greedy / sample" in capsys.readouterr().out


def test_compare_pairs_only_shared_problems_and_a_runs_rounds(tmp_path: Path) -> None:
    from alphallm.report.compare import compare, load_outcomes, round_by_round

    run = _run_dir(tmp_path, [[0] * 10 + [1] * 10, [1] * 20, [1] * 19 + [0]])
    assert set(load_outcomes(run)) == {"round 0 greedy", "round 1 greedy", "round 2 greedy"}
    first, second = round_by_round(run)
    assert first["label"] == "round 1 greedy" and first["change"] == pytest.approx(0.5) and first["z"] > 2
    assert second["change"] == pytest.approx(-0.05) and abs(second["z"]) < 2
    # Another read-out of the same trees (the learned-critics search's vote) compares as a method of its own.
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for record, votes in zip(records, ([0] * 20, [0] * 10 + [1] * 10, [1] * 20), strict=True):
        solved = {f"p{i}": v for i, v in enumerate(votes)}
        record["mcts_critics"] = {
            "solved": {p: 0 for p in solved},
            "other_readouts": {"vote": {"solved": solved}},
        }
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    labels = [row["label"] for row in round_by_round(run)]
    assert labels[-2:] == ["round 1 mcts_critics vote", "round 2 mcts_critics vote"]
    assert round_by_round(run)[-1]["change"] == pytest.approx(0.5)
    assert load_outcomes(run)["round 2 mcts_critics vote"]["p0"] == 1.0
    # Results on partly different problems compare on the ones both have.
    [row] = compare({"m": {"a": 0.0, "b": 1.0, "c": 0.0}}, {"m": {"b": 1.0, "c": 1.0, "d": 0.0}})
    assert row["problems"] == 2 and row["before"] == 0.5 and row["after"] == 1.0


def test_a_result_pairs_with_each_round_of_a_run_by_its_method(tmp_path: Path) -> None:
    from alphallm.report.compare import compare, load_outcomes

    run = _run_dir(tmp_path, [[0, 0, 1, 1], [1, 1, 1, 0]])
    result = tmp_path / "e.json"
    records = [{"problem_id": f"p{i}", "correct": c} for i, c in enumerate([True, False, True, True])]
    result.write_text(json.dumps({"method": "greedy", "records": records}))
    rows = compare(load_outcomes(result), load_outcomes(run))
    assert [row["label"] for row in rows] == ["greedy / round 0 greedy", "greedy / round 1 greedy"]
    assert [row["after"] - row["before"] for row in rows] == pytest.approx([-0.25, 0.0])
    # A method the run lacks still says what each side has.
    result.write_text(json.dumps({"method": "mcts", "records": records}))
    with pytest.raises(UserError, match="nothing to compare"):
        compare(load_outcomes(result), load_outcomes(run))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.json", "no such file or run directory"),
        (lambda d: (d / "x.json").write_text("{oops") and d / "x.json", "not a JSON result file"),
        (
            lambda d: (d / "y.json").write_text('{"results": [{"problem_id": "p"}]}') and d / "y.json",
            "record 0",
        ),
        (lambda d: (d / "z.json").write_text('{"accuracy": 1}') and d / "z.json", "no per-problem outcomes"),
        (lambda d: d, "no metrics.jsonl"),
    ],
)
def test_compare_names_the_culprit_in_one_line(
    tmp_path: Path, make: object, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    assert main(["compare", str(path), str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_one_input_alone_must_be_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"method": "greedy", "results": [{"problem_id": "p", "correct": true}]}')
    assert main(["compare", str(path)]) == 2
    assert "compare it with a second result B" in capsys.readouterr().err
    assert main(["compare", str(_run_dir(tmp_path, [[0, 1, 1], [1, 1, 1]]))]) == 0
    assert "round 1 greedy" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        (
            '{"round": 0, "greedy": {"solved": {"a": 1}}}\n{"round": 1, "greedy": {"solved"',
            ":2: not a JSON line",
        ),
        ("[1]\n", ":1: not a round's record"),
        ('{"greedy": {"solved": {"a": 1}}}\n', ":1: not a round's record"),
        ('{"round": 0, "greedy": {"solved": [1]}}\n', ":1: greedy.solved is not a mapping"),
        (
            '{"round": 0, "m": {"other_readouts": {"vote": 1}}}\n',
            ":1: m.other_readouts.vote is not a mapping",
        ),
    ],
)
def test_a_broken_metrics_line_is_named_by_file_and_line(
    tmp_path: Path, metrics: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "metrics.jsonl").write_text(metrics)
    assert main(["compare", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'metrics.jsonl'}{message}" in err and len(err.strip().splitlines()) == 1


def test_correct_must_be_a_real_boolean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # bool("false") is True: the string would count as solved
    path = tmp_path / "s.json"
    path.write_text('{"results": [{"problem_id": "x", "correct": "false"}]}')
    assert main(["compare", str(path), str(path)]) == 2
    assert f"{path}: record 0: correct must be true, false or null, not 'false'" in capsys.readouterr().err


def test_z_without_a_standard_error_is_not_beyond_noise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text('{"results": [{"problem_id": "x", "correct": true}]}')
    b.write_text('{"results": [{"problem_id": "x", "correct": null}]}')
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "inf" not in out and "n/a" in out


def test_results_of_different_tasks_do_not_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    rows = '"results": [{"problem_id": "1", "correct": true}, {"problem_id": "2", "correct": false}]'
    a.write_text(f'{{"task": "arith", {rows}}}')
    b.write_text(f'{{"task": "game24", "method": "eval", {rows.replace("results", "records")}}}')
    assert main(["compare", str(a), str(b)]) == 2
    assert f"A ({a}) is arith, B ({b}) is game24" in capsys.readouterr().err
    run = _run_dir(tmp_path, [[1, 0], [1, 1]])
    (run / "config.yaml").write_text("task: game24\n")
    assert main(["compare", str(a), str(run)]) == 2
    assert f"B ({run}) is game24" in capsys.readouterr().err
    b.write_text(f'{{"task": "arith", {rows}}}')
    assert main(["compare", str(a), str(b)]) == 0
