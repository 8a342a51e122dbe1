"""The self-improvement loop on a tiny configuration: it runs end to end, and a run killed at random
moments resumes to exactly the metrics of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

TINY = {
    "name": "tiny",
    "task": "arith",
    "policy": "arith-base",
    "rounds": 2,
    "imagine": {"problems": 6},
    "search": {"rollouts": 1, "batch_size": 6, "mcts": {"num_simulations": 6, "c_min_root": 1, "c_min": 1}},
    "learn": {
        "sft": {"epochs": 1, "batch_size": 8},
        "dpo": {"epochs": 1, "batch_size": 4},
        "dpo_min_gap": 0.3,
    },
    "critics": {"kinds": ["orm"], "train": {"epochs": 1, "batch_size": 16}},
    "evaluate": {
        "test_problems": 10,
        "search_problems": 4,
        "dev_problems": 10,
        "search": {
            "rollouts": 0,
            "batch_size": 4,
            "mcts": {"num_simulations": 6, "c_min_root": 1, "c_min": 1},
        },
    },
}


def _improve(config: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "alphallm", "improve", "--config", str(config), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_killed_runs_resume_to_the_same_metrics(tmp_path: Path) -> None:
    straight = tmp_path / "straight.yaml"
    straight.write_text(yaml.safe_dump({**TINY, "out_dir": str(tmp_path / "a")}))
    started = time.perf_counter()
    process = _improve(straight)
    assert process.wait(timeout=900) == 0, process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    duration = time.perf_counter() - started
    expected = _metrics(tmp_path / "a" / "tiny")
    assert [m["round"] for m in expected] == [0, 1, 2]
    assert (tmp_path / "a" / "tiny" / "report" / "index.html").exists()
    assert (tmp_path / "a" / "tiny" / "kept-policy" / "config.json").is_file()
    # Every method's record keeps its per-problem outcomes, so rounds can be compared problem by problem.
    greedy, mcts = expected[1]["greedy"], expected[1]["mcts"]
    assert len(greedy["solved"]) == TINY["evaluate"]["test_problems"]
    assert greedy["accuracy"] == pytest.approx(sum(greedy["solved"].values()) / len(greedy["solved"]))
    assert len(mcts["solved"]) == TINY["evaluate"]["search_problems"]
    assert mcts["accuracy"] == pytest.approx(sum(mcts["solved"].values()) / len(mcts["solved"]))
    # The learned-critics search is also read out by a vote, on the same trees and problems.
    voted = expected[1]["mcts_critics"]["other_readouts"]["vote"]
    assert voted["solved"].keys() == expected[1]["mcts_critics"]["solved"].keys()
    assert voted["accuracy"] == pytest.approx(sum(voted["solved"].values()) / len(voted["solved"]))

    killed = tmp_path / "killed.yaml"
    killed.write_text(yaml.safe_dump({**TINY, "out_dir": str(tmp_path / "b")}))
    rng = random.Random(7)
    for attempt in range(3):
        process = _improve(killed, *(["--resume"] if attempt else []))
        time.sleep(rng.uniform(0.15, 0.6) * duration)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    process = _improve(killed, "--resume")
    assert process.wait(timeout=900) == 0, process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    assert _metrics(tmp_path / "b" / "tiny") == expected


def test_a_second_run_with_the_same_name_needs_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from alphallm.cli import main

    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    (run / "meta.json").write_text("{}")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**TINY, "out_dir": str(tmp_path / "runs")}))
    assert main(["improve", "--config", str(config)]) == 2
    assert "pass --resume" in capsys.readouterr().err


def test_a_run_in_use_by_another_process_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second `improve` on a live run stops with one line; the lock dies with its holder."""
    from alphallm.cli import main
    from alphallm.io import exclusive

    run = tmp_path / "runs" / "tiny"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from alphallm.io import exclusive\n"
            f"with exclusive({str(run)!r}, 'test'):\n    print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump({**TINY, "out_dir": str(tmp_path / "runs")}))
        assert main(["improve", "--config", str(config), "--resume"]) == 2
        err = capsys.readouterr().err
        assert f"in use by another self-improvement run (pid {holder.pid})" in err
        assert not (run / "round-0").exists()
    finally:
        holder.kill()
        holder.wait()
    with exclusive(run, "test"):  # SIGKILL left no stale lock behind
        pass


def test_a_run_started_by_another_process_in_the_meantime_is_left_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new run's directory appears while this `improve` checks its inputs: another process started the
    same run. The refusal must not remove that run's lock and record as a failed start of its own."""
    import contextlib

    import alphallm.commands.improve_cmd as improve_cmd
    from alphallm.cli import main
    from alphallm.io import exclusive

    run = tmp_path / "runs" / "tiny"
    other = contextlib.ExitStack()

    def the_other_run_starts(loop: object) -> None:
        other.enter_context(exclusive(run, "self-improvement run"))
        for name in ("config.yaml", "meta.json"):
            (run / name).write_text("{}")

    monkeypatch.setattr(improve_cmd, "_check_inputs", the_other_run_starts)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**TINY, "out_dir": str(tmp_path / "runs")}))
    with other:
        assert main(["improve", "--config", str(config)]) == 2
        assert "is in use by another self-improvement run" in capsys.readouterr().err
        assert sorted(p.name for p in run.iterdir()) == [".lock", "config.yaml", "meta.json"]


def test_metrics_are_written_as_rounds_finish(tmp_path: Path) -> None:
    """Every finished round is in ``metrics.jsonl`` at once; later rounds are simply absent."""
    from alphallm.loop import Loop
    from alphallm.loop_config import LoopConfig, build

    loop = Loop(build(LoopConfig, {**TINY, "out_dir": str(tmp_path)}))
    for k, name in ((0, "eval.json"), (1, "evaluate.json")):
        loop.round_dir(k).mkdir(parents=True)
        (loop.round_dir(k) / name).write_text(json.dumps({"greedy": {"accuracy": 0.1 * k}, "seconds": 3}))
    loop._write_metrics()  # type: ignore[attr-defined]
    assert _metrics(loop.dir) == [
        {"round": 0, "greedy": {"accuracy": 0.0}},
        {"round": 1, "greedy": {"accuracy": 0.1}},
    ]


def test_a_resumed_run_records_changed_settings(tmp_path: Path) -> None:
    """Resuming with other settings is allowed (rounds done keep theirs) but written into meta.json."""
    from alphallm.loop import Loop
    from alphallm.loop_config import LoopConfig, build

    Loop(build(LoopConfig, {**TINY, "out_dir": str(tmp_path)}))._write_meta()  # type: ignore[attr-defined]
    same = Loop(build(LoopConfig, {**TINY, "out_dir": str(tmp_path)}))
    same._write_meta()  # type: ignore[attr-defined]
    assert "config_changes" not in json.loads((same.dir / "meta.json").read_text())
    changed = {**TINY, "out_dir": str(tmp_path), "critics": {**TINY["critics"], "use_in_search": False}}
    loop = Loop(build(LoopConfig, changed))
    loop._write_meta()  # type: ignore[attr-defined]
    [record] = json.loads((loop.dir / "meta.json").read_text())["config_changes"]
    assert record["changes"] == ["critics.use_in_search: True -> False"]
    assert record["rounds_done"] == 0 and record["next_stage"] == "round 0: eval"
    # A setting newer than the code that started the run is no change while it keeps its default
    # (a new setting defaults to what the code did before it), and is one when set otherwise.
    saved = yaml.safe_load((loop.dir / "config.yaml").read_text())
    del saved["evaluate"]["search"]["compare_readouts"], saved["evaluate"]["critics_readout"]
    (loop.dir / "config.yaml").write_text(yaml.safe_dump(saved))
    voted = {**changed, "evaluate": {**TINY["evaluate"], "critics_readout": "vote"}}
    Loop(build(LoopConfig, voted))._write_meta()  # type: ignore[attr-defined]
    records = json.loads((loop.dir / "meta.json").read_text())["config_changes"]
    assert len(records) == 2 and records[1]["changes"] == ["evaluate.critics_readout: None -> 'vote'"]


def test_a_run_does_not_resume_as_another_task_or_policy(tmp_path: Path) -> None:
    """Every round is measured against round 0, the starting policy on this task: a resumed run given
    another task or policy would mix two runs (it searched game24 with the arith run's policy)."""
    from alphallm.errors import UserError
    from alphallm.loop import Loop
    from alphallm.loop_config import LoopConfig, build

    Loop(build(LoopConfig, {**TINY, "out_dir": str(tmp_path)}))._write_meta()  # type: ignore[attr-defined]
    saved = (tmp_path / "tiny" / "config.yaml").read_text()
    for other in ({"task": "game24", "policy": "game24-base"}, {"policy": "game24-base"}):
        loop = Loop(build(LoopConfig, {**TINY, **other, "out_dir": str(tmp_path)}))
        key = next(iter(other))
        with pytest.raises(UserError, match=f"a run of {key} 'arith.*' cannot resume as {key} 'game24"):
            loop._write_meta()  # type: ignore[attr-defined]
        assert (tmp_path / "tiny" / "config.yaml").read_text() == saved  # nothing of the run rewritten
    assert "config_changes" not in json.loads((tmp_path / "tiny" / "meta.json").read_text())


def test_a_run_resumed_with_other_code_records_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import alphallm.loop_meta
    from alphallm.loop import Loop
    from alphallm.loop_config import LoopConfig, build

    def loop_at(commit: str) -> object:
        monkeypatch.setattr(alphallm.loop_meta, "_git_hash", lambda: commit)
        loop = Loop(build(LoopConfig, {**TINY, "out_dir": str(tmp_path)}))
        loop._write_meta()  # type: ignore[attr-defined]
        return json.loads((loop.dir / "meta.json").read_text())

    assert loop_at("aaa")["git"] == "aaa"
    assert "code_changes" not in loop_at("aaa")  # the same code again: nothing to record
    assert [c["git"] for c in loop_at("bbb-dirty")["code_changes"]] == ["bbb-dirty"]
    assert [c["git"] for c in loop_at("bbb-dirty")["code_changes"]] == ["bbb-dirty"]  # still the same
    # Killed in round 1 after its search: the record names the stage the new code starts with.
    run = tmp_path / "tiny"
    for done in ("round-0/eval.json", "round-1/imagine.json", "round-1/search.json"):
        (run / done).parent.mkdir(parents=True, exist_ok=True)
        (run / done).write_text("{}")
    meta = loop_at("aaa")
    assert meta["git"] == "aaa" and [c["git"] for c in meta["code_changes"]] == ["bbb-dirty", "aaa"]
    assert meta["code_changes"][0]["next_stage"] == "round 0: eval"
    assert meta["code_changes"][1] | {"at": None} == {
        "at": None,
        "rounds_done": 0,
        "next_stage": "round 1: data",
        "git": "aaa",
    }


def test_the_learned_critics_search_prunes_with_the_prm_only_when_asked() -> None:
    from alphallm.errors import UserError
    from alphallm.loop_config import LoopConfig, build
    from alphallm.loop_solve import evaluation_searches

    critics = {"prm": "critics/prm", "orm": "critics/orm"}
    plain = evaluation_searches(build(LoopConfig, TINY).evaluate, critics, seed=3)
    assert plain["mcts"].critic_dirs == {} and plain["mcts"].seed == 3
    assert not plain["mcts_critics"].prune  # no verifier, and by default nothing in its place
    assert plain["mcts_critics"].weights == {"prm": 1.0, "orm": 1.0, "rollout": 1.0}
    # The learned critics' search may be read out by a vote; the verifier's search keeps its own read-out.
    assert (plain["mcts_critics"].readout, plain["mcts"].readout) == ("best_value", "best_value")
    voted = build(LoopConfig, {**TINY, "evaluate": {**TINY["evaluate"], "critics_readout": "vote"}})
    runs_voted = evaluation_searches(voted.evaluate, critics, seed=3)
    assert (runs_voted["mcts_critics"].readout, runs_voted["mcts"].readout) == ("vote", "best_value")
    # Either way the same trees are also read out the other way, at no cost: the record shows both.
    assert plain["mcts_critics"].compare_readouts == ["vote"]
    assert runs_voted["mcts_critics"].compare_readouts == ["best_value"]
    assert plain["mcts"].compare_readouts == []
    with pytest.raises(UserError, match=r"critics_readout must be one of .* not 'votes'"):
        build(LoopConfig, {**TINY, "evaluate": {**TINY["evaluate"], "critics_readout": "votes"}})

    evaluate = {**TINY["evaluate"], "critics_prune_below": 0.1}
    config = build(LoopConfig, {**TINY, "critics": {"kinds": ["prm", "orm"]}, "evaluate": evaluate})
    runs = evaluation_searches(config.evaluate, critics, seed=3)
    soft = runs["mcts_critics"]
    assert (soft.prune, soft.prune_with, soft.prune_below, soft.critic_dirs) == (True, "prm", 0.1, critics)
    assert runs["mcts"] == plain["mcts"]  # the verifier's search is untouched
    assert list(evaluation_searches(config.evaluate, {}, seed=3)) == ["mcts"]
    no_prm = evaluation_searches(config.evaluate, {"orm": "critics/orm"}, seed=3)["mcts_critics"]
    assert not no_prm.prune  # a round whose PRM had too few labels to train: nothing prunes

    with pytest.raises(UserError, match=r"critics_prune_below needs the prm critic in critics\.kinds"):
        build(LoopConfig, {**TINY, "evaluate": evaluate})  # TINY's critics: orm only
    with pytest.raises(UserError, match=r"evaluate: critics_prune_below must lie in \[0, 1\)"):
        build(LoopConfig, {**TINY, "evaluate": {**evaluate, "critics_prune_below": 1.5}})


def test_the_report_says_when_the_prm_pruned_the_learned_critics_search() -> None:
    from alphallm.report.run_report import _table

    cell = {"accuracy": 0.4, "tokens_per_problem": 900.0}
    plain = [{"round": 0, "greedy": cell}, {"round": 1, "accepted": True, "mcts_critics": cell}]
    assert "<th>eta-MCTS (learned critics)</th>" in _table(plain)
    pruned = [plain[0], {**plain[1], "mcts_critics": {**cell, "prm_prunes_below": 0.1}}]
    assert "<th>eta-MCTS (learned critics, PRM prunes ≤ 0.1)</th>" in _table(pruned)
    # The same search's other read-out, under its own.
    voted = [plain[0], {**plain[1], "mcts_critics": {**cell, "other_readouts": {"vote": {"accuracy": 0.5}}}}]
    assert "read out by vote: 0.500" in _table(voted) and "read out by" not in _table(plain)
    # Which round trained each critic a round used (the critic gate can keep an earlier one).
    gated = [plain[0], {**plain[1], "critics": {"value": 2, "orm": 1}}]
    assert "<td>value 2, orm 1</td>" in _table(gated) and "<td>value" not in _table(plain)


def _outcome_trees(groups: range, seed: int) -> list[dict]:
    """Trees whose rollouts are verified exactly when their last digit is even (a label a critic learns)."""
    rng = random.Random(seed)
    trees = []
    for g in groups:
        rollouts = []
        for _ in range(8):
            digit = rng.randint(0, 9)
            rollouts.append(
                {"text": f"{rng.randint(10, 99)}{digit}\n", "verified": digit % 2 == 0, "score": 0.0}
            )
        root = {"id": 0, "parent": -1, "text": "", "terminal": False, "verified": None, "rollouts": rollouts}
        trees.append({"problem_id": f"g{g}", "root": "Q: x\n", "nodes": [{**root, "children": []}]})
    return trees


def test_the_critic_gate_keeps_the_critic_in_use_when_its_successor_scores_worse(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Round 2's ORM learns nothing (lr 1e-9): on held-out problems neither critic trained on it ranks
    outcomes worse than round 1's, so round 1's stays in use; without the gate round 2's replaces it."""
    from alphallm.loop import Loop
    from alphallm.loop_config import LoopConfig, build
    from alphallm.train.critic import split_by_group, trained_groups
    from alphallm.train.labels import orm_rows

    learns = {"epochs": 4, "lr": 3e-3, "batch_size": 32}
    config = {**TINY, "out_dir": str(tmp_path), "policy": str(tiny_model_dir)}
    loop = Loop(build(LoopConfig, {**config, "critics": {"kinds": ["orm"], "train": learns}}))
    rounds = {1: _outcome_trees(range(60), 1), 2: _outcome_trees(range(30, 100), 2)}  # 30 problems recur
    for k, trees in rounds.items():
        loop.round_dir(k).mkdir(parents=True)
        (loop.round_dir(k) / "trees.json").write_text(json.dumps({"trees": trees}))
        (loop.round_dir(k) / "gate.json").write_text(json.dumps({"accepted": False}))
    (loop.round_dir(1) / "critics.json").write_text(json.dumps(loop._stage_critics(1)))  # type: ignore[attr-defined]
    assert loop.critic_rounds(1) == {"orm": 1}

    stalled = {"kinds": ["orm"], "train": {**learns, "lr": 1e-9}}
    loop = Loop(build(LoopConfig, {**config, "critics": stalled}))
    record = loop._stage_critics(2)  # type: ignore[attr-defined]
    gate = record["orm"]["gate"]
    assert gate["previous"] > 0.8 and gate["previous"] > gate["new"] and not gate["accepted"]
    assert record["kept"] == {"orm": 1} and gate["previous_round"] == 1
    (loop.round_dir(2) / "critics.json").write_text(json.dumps(record))
    assert loop.critics(2) == {"orm": str(loop.round_dir(1) / "critics" / "orm")}
    assert (loop.round_dir(2) / "critics" / "orm" / "critic.json").is_file()  # trained and kept on disk
    # Compared only on round 2's held-out problems that round 1's critic did not train on either.
    rows = orm_rows(rounds[1] + rounds[2])
    held = {r.group for r in split_by_group(rows, 0.2, loop.seed(2, "critics"))[1]}
    seen = trained_groups(
        orm_rows(rounds[1]), replace(loop.config.critics.train, seed=loop.seed(1, "critics"))
    )
    assert gate["problems"] == len(held - seen) < len(held)

    ungated = Loop(build(LoopConfig, {**config, "critics": {**stalled, "gate": False}}))
    record = ungated._stage_critics(2)  # type: ignore[attr-defined]
    assert "gate" not in record["orm"] and record["kept"] == {"orm": 2}

    # The search gate: the held-out gate's pick (round 1's, also the one in use) and the retrained one
    # guide the learned-critics search on dev problems; a set named twice is searched once.
    searched = Loop(build(LoopConfig, {**config, "critics": {**stalled, "gate_search": 4}}))
    record = searched._stage_critics(2)  # type: ignore[attr-defined]
    gate = record["search_gate"]
    assert gate["problems"] == 4 and set(gate["accuracy"]) == {"gate", "in use", "retrained"}
    assert set(gate["changes"]) == {"in use", "retrained"}
    assert gate["changes"]["in use"]["se"] == 0 and gate["changes"]["in use"]["change"] == 0
    expected = {"gate": {"orm": 1}, "in use": {"orm": 1}, "retrained": {"orm": 2}}[gate["kept"]]
    assert record["kept"] == expected


def test_the_loops_orm_trains_on_made_negatives_and_its_other_critics_do_not(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """``critics.train.negatives`` is one setting for every kind: the ORM gets the task's wrong variants
    of its right solutions, the value critic its labels alone."""
    from alphallm.loop import Loop
    from alphallm.loop_config import LoopConfig, build
    from alphallm.tasks.arith import ArithTask
    from alphallm.train.critic import split_by_group
    from alphallm.train.labels import orm_rows

    task, rng = ArithTask(), random.Random(0)
    trees = []
    for problem in task.problems("test")[:30]:
        right, wrong = task.solve(problem), task.teacher_solution(problem, rng, noise=1.0)
        rollouts = [{"text": t, "verified": task.check(problem, t), "score": 0.0} for t in (right, wrong)]
        root = {"id": 0, "parent": -1, "text": "", "terminal": False, "verified": None, "rollouts": rollouts}
        trees.append({"problem_id": problem.id, "root": task.format_prompt(problem), "nodes": [root]})
    critics = {"kinds": ["value", "orm"], "train": {"epochs": 1, "batch_size": 16, "negatives": 2}}
    config = {**TINY, "out_dir": str(tmp_path), "policy": str(tiny_model_dir), "critics": critics}
    loop = Loop(build(LoopConfig, config))
    loop.round_dir(1).mkdir(parents=True)
    (loop.round_dir(1) / "trees.json").write_text(json.dumps({"trees": trees}))
    record = loop._stage_critics(1)  # type: ignore[attr-defined]
    assert record["trained"] == ["value", "orm"]
    train, _ = split_by_group(orm_rows(trees), 0.2, loop.seed(1, "critics"))
    right = sum(row.target == 1.0 for row in train)
    assert right > 20 and right < 2 * record["orm"]["negatives"] <= 2 * 2 * right
    assert record["orm"]["train_rows"] == len(train) + record["orm"]["negatives"]
    assert record["value"]["negatives"] == 0


@pytest.mark.parametrize(
    ("retrained", "kept"),
    [
        ([1] * 6 + [0] * 14, "retrained"),  # 6 more of 20 solved, none lost: beyond noise
        ([1] * 3 + [0] * 17, "gate"),  # 3 more, within noise of the pick
        ([0] * 20, "gate"),
    ],
)
def test_the_search_gate_leaves_the_held_out_pick_only_beyond_noise(retrained: list[int], kept: str) -> None:
    from alphallm.loop_solve import choose_beyond_noise

    ids = [f"p{i}" for i in range(20)]
    solved = {
        "gate": dict.fromkeys(ids, 0),
        "in use": {pid: int(i == 0) for i, pid in enumerate(ids)},  # one more: within noise
        "retrained": dict(zip(ids, retrained, strict=True)),
    }
    choice = choose_beyond_noise(solved, "gate")
    assert choice["kept"] == kept
    assert choice["accuracy"]["retrained"] == sum(retrained) / 20
    assert choice["changes"]["in use"]["change"] == pytest.approx(0.05)


def test_the_largest_gain_beyond_noise_wins_the_search_gate() -> None:
    from alphallm.loop_solve import choose_beyond_noise

    ids = [f"p{i}" for i in range(30)]
    solved = {
        "gate": dict.fromkeys(ids, 0),
        "in use": {pid: int(i < 8) for i, pid in enumerate(ids)},
        "retrained": {pid: int(i < 12) for i, pid in enumerate(ids)},
    }
    assert choose_beyond_noise(solved, "gate")["kept"] == "retrained"
    assert choose_beyond_noise({**solved, "retrained": solved["gate"]}, "gate")["kept"] == "in use"
