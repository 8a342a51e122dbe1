from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from alphallm.cli import main
from alphallm.errors import UserError
from alphallm.lm import load_lm
from alphallm.search import MCTSConfig
from alphallm.solve import METHODS, SolveConfig, solve
from alphallm.tasks import get_task


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir: Path):
    return load_lm(str(tiny_model_dir))


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_and_counts_compute(tiny_lm, method: str) -> None:
    task = get_task("game24")
    problems = task.problems("test")[:3]
    config = replace(
        SolveConfig(method=method, samples=2, beam_width=2, expansions=2, bfs_budget=3, batch_size=2),
        mcts=MCTSConfig(num_simulations=6, max_depth=3),
    )
    report = solve(task, problems, policy=tiny_lm, config=config, keep_trees=True)
    assert [r.problem_id for r in report.results] == [p.id for p in problems]
    assert report.usage["policy"]["generated_tokens"] > 0
    assert all(r.tree is not None and r.tree["nodes"][0]["id"] == 0 for r in report.results)
    assert all(r.tree is not None and r.tree["task"] == task.name for r in report.results)  # for eval-critic
    if method in ("mcts", "beam", "bfs"):
        assert report.usage["rollout"]["generated_tokens"] > 0  # rollouts are counted apart
    else:
        assert report.usage["rollout"]["generated_tokens"] == 0


def test_the_implicit_q_critics_scoring_is_counted_apart_from_the_policys_sampling(
    tiny_model_dir: Path,
) -> None:
    task = get_task("arith")
    policy = load_lm(str(tiny_model_dir))  # its own, so that its usage is this search's alone
    config = replace(
        SolveConfig(batch_size=2, rollouts=1, weights={"implicit_q": 1.0}, anchor=str(tiny_model_dir)),
        mcts=MCTSConfig(num_simulations=4, max_depth=3),
    )
    report = solve(task, task.problems("test")[:2], policy=policy, config=config)
    scoring = report.usage["critic:implicit_q"]
    assert scoring["calls"] > 0 and scoring["prefill_tokens"] > 0 and scoring["generated_tokens"] == 0
    # The policy and the anchor (the same weights) score the same options: half the critic's tokens
    # ran on the policy's model, whose whole use is the search's sampling plus that half.
    spent = policy.usage.prefill_tokens
    assert spent == (
        report.usage["policy"]["prefill_tokens"]
        + report.usage["rollout"]["prefill_tokens"]
        + scoring["prefill_tokens"] // 2
    )


def test_max_tokens_bounds_rollouts_and_completions(tiny_lm) -> None:
    """``max_tokens`` replaces the task's limit for rollouts and completed read-outs (a policy that
    retries needs more room than the task's solutions): the random-weight model writes to the limit."""
    task = get_task("game24")
    problems = task.problems("test")[:2]
    base = replace(SolveConfig(batch_size=2, rollouts=1), mcts=MCTSConfig(num_simulations=3, max_depth=2))

    def rollout_lengths(config: SolveConfig) -> list[int]:
        report = solve(task, problems, policy=tiny_lm, config=config, keep_trees=True)
        texts = [r["text"] for res in report.results for n in res.tree["nodes"] for r in n["rollouts"]]
        assert texts
        return [len(tiny_lm.encode_continuation(text)) for text in texts]

    assert max(rollout_lengths(base)) > 12
    assert max(rollout_lengths(replace(base, max_tokens=12))) <= 12
    # No rollouts, two levels of a 5-7 line solution: every answer is the best path completed greedily.
    arith, policy = get_task("arith"), load_lm("arith-base")
    shallow = replace(base, rollouts=0, mcts=MCTSConfig(num_simulations=3, max_depth=2))
    full, cut = (
        solve(arith, arith.problems("test")[:2], policy=policy, config=c, keep_trees=True)
        for c in (shallow, replace(shallow, max_tokens=12))
    )
    assert [r.tree["nodes"] for r in full.results] == [r.tree["nodes"] for r in cut.results]  # one search
    assert all(r.readout == "completed" for r in cut.results)
    lengths = [(len(a.solution), len(b.solution)) for a, b in zip(full.results, cut.results)]
    assert all(c <= f for f, c in lengths) and any(c < f for f, c in lengths)
    assert cut.usage["policy"]["generated_tokens"] < full.usage["policy"]["generated_tokens"]
    with pytest.raises(ValueError, match="max_tokens"):
        SolveConfig(max_tokens=0)


RECORDED = [
    "anchor",
    "batch_size",
    "beam_width",
    "bfs_budget",
    "critic_dirs",
    "expansions",
    "max_tokens",
    "method",
    "mcts",
    "prune",
    "prune_below",
    "prune_with",
    "reachability",
    "readout",
    "rollout_temperature",
    "rollouts",
    "samples",
    "seed",
    "temperature",
    "weights",
]
RECORDED_MCTS = [
    "adaptive_branching",
    "alpha",
    "c_max",
    "c_max_root",
    "c_min",
    "c_min_root",
    "c_uct",
    "evaluate_root",
    "fixed_width",
    "greedy_first_child",
    "importance",
    "leaves_per_wave",
    "max_depth",
    "merge",
    "merge_retries",
    "merge_threshold",
    "num_simulations",
    "selection",
    "virtual_loss",
]


def test_later_settings_leave_the_fingerprint_of_older_searches_alone() -> None:
    """Settings newer than a saved search stay out of its recorded config while unset, so a resumed run
    still finds its chunks; set, they are recorded and read back."""
    plain = SolveConfig().to_dict()
    assert "compare_readouts" not in plain and "drop_twins" not in plain["mcts"]
    # What searches saved so far recorded. A new setting changes this, and with it the fingerprint of
    # every saved chunk, unless it joins LATER_SETTINGS.
    assert sorted(plain) == sorted(RECORDED) and sorted(plain["mcts"]) == sorted(RECORDED_MCTS)
    newer = replace(
        SolveConfig(), mcts=MCTSConfig(drop_twins=True), compare_readouts=["vote"], consistency_samples=4
    )
    data = newer.to_dict()
    assert data["mcts"]["drop_twins"] is True and data["compare_readouts"] == ["vote"]
    assert data["consistency_samples"] == 4 and "consistency_temperature" not in data
    assert SolveConfig.from_dict(data) == newer


def test_compared_readouts_score_the_same_trees_as_searches_read_out_that_way() -> None:
    """``compare_readouts`` scores other read-outs on the search's own trees: each problem's verdict
    equals that of the same search read out that way (most_visited often finds no finished path: then
    both complete the best path), and the search itself, its answers and its compute, do not change."""
    task, policy = get_task("game24"), load_lm("game24-base")
    problems = task.problems("test")[:6]
    base = replace(SolveConfig(batch_size=6, rollouts=1), mcts=MCTSConfig(num_simulations=8))
    others = ["most_visited", "vote"]
    plain = solve(task, problems, policy=policy, config=base)
    compared = solve(task, problems, policy=policy, config=replace(base, compare_readouts=others))
    assert [r.solution for r in compared.results] == [r.solution for r in plain.results]
    assert compared.usage == plain.usage
    assert "compared_readouts" not in plain.summary() and "compare_readouts" not in plain.config
    verdicts, rules = {}, {}
    for name in others:
        alone = solve(task, problems, policy=policy, config=replace(base, readout=name))
        verdicts[name] = [bool(r.correct) for r in alone.results]
        rules[name] = {r.readout for r in alone.results}
        assert [r.other_readouts[name] for r in compared.results] == verdicts[name]
        assert compared.summary()["compared_readouts"][name] == alone.accuracy
    # The read-outs disagree on these puzzles, and most_visited answers by completing the best path on
    # some while the search's own read-out (best_value) found a solution in every tree.
    assert verdicts["most_visited"] != verdicts["vote"]
    assert "completed" in rules["most_visited"] and {r.readout for r in plain.results} == {"best_value"}
    with pytest.raises(ValueError, match="not 'votes'"):
        SolveConfig(compare_readouts=["votes"])


def test_search_cli_saves_trees_for_the_viewer(tiny_model_dir: Path, tmp_path: Path) -> None:
    trees = tmp_path / "trees"
    out = tmp_path / "res.json"
    status = main(
        [
            "search",
            "--task",
            "arith",
            "--model",
            str(tiny_model_dir),
            "--limit",
            "2",
            "--simulations",
            "5",
            "--save-trees",
            str(trees),
            "--compare-readouts",
            "vote",
            "most_visited",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    data = json.loads(out.read_text())
    assert data["problems"] == 2 and data["config"]["mcts"]["num_simulations"] == 5
    assert set(data["compared_readouts"]) == {"vote", "most_visited"}
    assert all(set(r["other_readouts"]) == {"vote", "most_visited"} for r in data["results"])
    files = sorted(trees.glob("*.json"))
    assert len(files) == 2
    tree = json.loads(files[0].read_text())
    assert tree["nodes"][0]["visits"] == 5
    assert main(["viz", str(trees), "--out", str(tmp_path / "trees.html")]) == 0
    assert (tmp_path / "trees.html").read_text().count("tree-data") >= 1


def test_search_cli_rejects_bad_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("mcts:\n  num_simulations: 0\n")
    assert main(["search", "--task", "arith", "--config", str(config)]) == 2
    assert "num_simulations must be at least 1" in capsys.readouterr().err
    config.write_text("sampels: 3\nzzz: 1\n")
    assert main(["search", "--task", "arith", "--config", str(config)]) == 2
    assert "unknown search setting(s): sampels (did you mean 'samples'?), zzz\n" in capsys.readouterr().err
    config.write_text("mcts: {c_utc: 1}\n")
    assert main(["search", "--task", "arith", "--config", str(config)]) == 2
    assert "mcts: unknown search setting(s): c_utc (did you mean 'c_uct'?)" in capsys.readouterr().err
    assert main(["search", "--task", "arith", "--max-tokens", "0"]) == 2
    assert "invalid search settings: max_tokens must be at least 1" in capsys.readouterr().err
    config.write_text("compare_readouts: [vote, votes]\n")
    assert main(["search", "--task", "arith", "--config", str(config)]) == 2
    assert "must be one of auto, most_visited, best_value, vote, majority, not 'votes'" in (
        capsys.readouterr().err
    )


def test_empty_weights_mean_no_critics(tmp_path: Path) -> None:
    """``weights: {}`` searches with no critic at all (no verifier sneaks in as a default)."""
    from alphallm.cli import _build_parser
    from alphallm.commands.search_cmd import build_config

    def weights_of(text: str | None, *flags: str) -> dict[str, float]:
        argv = ["search", "--task", "arith", *flags]
        if text is not None:
            (tmp_path / "c.yaml").write_text(text)
            argv += ["--config", str(tmp_path / "c.yaml")]
        return build_config(_build_parser().parse_args(argv)).weights

    assert weights_of("weights: {}\n") == {}
    assert weights_of("weights: {}\n", "--weight", "orm=2") == {"orm": 2.0}
    assert weights_of("rollouts: 1\n") == weights_of(None) == SolveConfig().weights
    # --critic adds weight 1 to default weights, never to weights the config spells out.
    assert weights_of(None, "--critic", "prm=p")["prm"] == 1.0
    assert weights_of("weights: {prm: 1}\n", "--critic", "prm=p") == {"prm": 1.0}
    only_prm = "weights: {prm: 1}\n"
    assert weights_of(only_prm, "--critic", "orm=o", "--weight", "orm=0") == {"prm": 1.0, "orm": 0.0}
    with pytest.raises(UserError, match=r"--critic value: .* without 'value'"):
        weights_of("weights: {prm: 1}\n", "--critic", "value=v")


def test_a_search_config_sets_method_and_seed_unless_the_flags_do(tmp_path: Path) -> None:
    from alphallm.cli import _build_parser
    from alphallm.commands.search_cmd import build_config

    (tmp_path / "c.yaml").write_text("method: bon\nseed: 7\n")

    def method_and_seed(*flags: str) -> tuple[str, int]:
        config = build_config(_build_parser().parse_args(["search", "--task", "arith", *flags]))
        return config.method, config.seed

    assert method_and_seed() == ("mcts", 0)
    assert method_and_seed("--config", str(tmp_path / "c.yaml")) == ("bon", 7)
    assert method_and_seed("--config", str(tmp_path / "c.yaml"), "--method", "sc", "--seed", "3") == ("sc", 3)


def test_solve_in_chunks_equals_one_solve_and_resumes_a_killed_run(tmp_path: Path) -> None:
    """Without Ray, a search streamed chunk by chunk gets one ``solve``'s results; after a kill it redoes
    only the chunks that are missing or were made for other work."""
    import shutil
    from dataclasses import asdict

    from alphallm.distributed import solve_in_chunks

    task = get_task("arith")
    problems = task.problems("test")[:4]
    config = SolveConfig(method="mcts", batch_size=2, rollouts=1, mcts=MCTSConfig(num_simulations=3), seed=7)
    lm = load_lm("arith-base", device="cpu")

    def rows(report: object) -> list[dict[str, object]]:
        return json.loads(json.dumps([asdict(r) for r in report.results], default=str))  # type: ignore[attr-defined]

    whole = solve(task, problems, policy=lm, config=config, keep_trees=True)
    out = tmp_path / "chunks"

    def chunked(config: SolveConfig = config, out: Path = out) -> object:
        return solve_in_chunks(
            task, problems, model="arith-base", policy=lm, config=config, out_dir=out, keep_trees=True
        )

    first = chunked()
    assert rows(first) == rows(whole) and first.usage == whole.usage  # type: ignore[attr-defined]
    files = sorted(out.glob("chunk-*.json"))
    assert len(files) == 2
    files[0].unlink()  # killed before it was written
    other = chunked(replace(config, seed=8), tmp_path / "other")  # a chunk of other work in its place
    assert rows(other)[2:] != rows(whole)[2:]
    shutil.copy(tmp_path / "other" / files[1].name, files[1])
    assert rows(chunked()) == rows(whole)


def test_a_search_without_terminals_keeps_its_completed_answer_as_training_data_and_labels() -> None:
    from alphallm.train.data import sft_rows
    from alphallm.train.labels import orm_rows, success_counts

    task = get_task("arith")
    problems = task.problems("test")[:8]
    # Two levels of a 5-7 line solution and no rollouts: every answer is the greedy completion of the
    # best path, outside the tree.
    config = replace(SolveConfig(rollouts=0, batch_size=8), mcts=MCTSConfig(num_simulations=3, max_depth=2))
    report = solve(task, problems, policy=load_lm("arith-base"), config=config, keep_trees=True)
    trees = [r.tree for r in report.results]
    assert all(r.readout == "completed" for r in report.results)
    assert all(
        t is not None and t["completed"]["verified"] == r.correct for t, r in zip(trees, report.results)
    )
    assert not any(n.get("terminal") for t in trees for n in t["nodes"])  # type: ignore[index]
    right = {(task.format_prompt(p), r.solution) for p, r in zip(problems, report.results) if r.correct}
    assert right and set(sft_rows(trees)) == right  # type: ignore[arg-type]
    # The critics learn from it too: an ORM row with its outcome, and the root's success count.
    orm = {(row.prompt, row.solution): row.target for row in orm_rows(trees)}  # type: ignore[arg-type]
    for problem, result, tree in zip(problems, report.results, trees):
        assert orm[(task.format_prompt(problem), result.solution)] == float(bool(result.correct))
        root = next(int(n["id"]) for n in tree["nodes"] if int(n["parent"]) < 0)  # type: ignore[index]
        assert success_counts(tree)[root][0] == int(bool(result.correct))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mcts": 48}, "mcts: expected a mapping, not 48"),
        ({"mcts": {"num_simulations": 2.5}}, "mcts: num_simulations: expected an integer, not 2.5"),
        ({"weights": ["tool", "rollout"]}, "weights: expected a mapping, not ['tool', 'rollout']"),
        (
            {"weights": {"tool": 1.0, "rollout": "abc"}},
            "weights.rollout: expected a finite number, not 'abc'",
        ),
        ({"weights": {"tool": -1.0}}, "weights.tool: must be at least 0, not -1.0"),
        (
            {"weights": {"rolout": 1.0}},
            "weights: unknown critic 'rolout' (tool, rollout, oracle, implicit_q,",
        ),
        ({"prune": "no"}, "prune: expected true or false, not 'no'"),
        ({"critic_dirs": {"vlaue": "d"}}, "critic_dirs: unknown critic kind 'vlaue' (value, prm, orm)"),
        ({"max_tokens": 2.5}, "max_tokens: expected an integer or null, not 2.5"),
        ({"rollout_temperature": -1.0}, "rollout_temperature must be non-negative"),
    ],
)
def test_search_settings_of_the_wrong_type_or_name_are_one_line_errors(
    settings: dict[str, object], message: str
) -> None:
    import re

    with pytest.raises(ValueError, match=re.escape(message)):
        SolveConfig.from_dict(settings)


def test_search_cli_refuses_wrong_weights_and_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    search = ["search", "--task", "arith", "--limit", "1"]
    for flag, message in [
        ("foo=1", "weights: unknown critic 'foo'"),
        ("tool=-1", "weights.tool: must be at least 0, not -1.0"),
        ("rollout=nan", "weights.rollout: expected a finite number, not nan"),
    ]:
        assert main([*search, "--weight", flag]) == 2
        assert message in capsys.readouterr().err
    for text, message in [
        ('prune: "no"\n', "prune: expected true or false, not 'no'"),
        ("weights: {tool: -1.0, rollout: abc}\n", "weights.rollout: expected a finite number, not 'abc'"),
        ("mcts: {num_simulations: 2.5}\n", "mcts: num_simulations: expected an integer, not 2.5"),
        ("mcts: 48\n", "mcts: expected a mapping, not 48"),
        ("weights: [tool, rollout]\n", "weights: expected a mapping, not ['tool', 'rollout']"),
    ]:
        config.write_text(text)
        assert main([*search, "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert main([*search, "--critic", "vlaue=d"]) == 2
    assert "critic_dirs: unknown critic kind 'vlaue'" in capsys.readouterr().err
    # A learned critic's weight with no such critic did nothing, silently.
    assert main([*search, "--weight", "prm=1"]) == 2
    assert "weight prm=1: no prm critic to weigh; give --critic prm=DIR" in capsys.readouterr().err
    config.write_text("weights: {tool: 1, orm: 0.5}\n")
    assert main([*search, "--config", str(config)]) == 2
    assert "weight orm=0.5: no orm critic" in capsys.readouterr().err
