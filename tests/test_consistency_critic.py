"""The consistency critic: a complete solution scored by the share of the policy's samples that reach
its answer, with no gold answer and no verifier; in eval-critic and in the search, its tokens counted."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from alphallm.critics.base import CriticInput
from alphallm.critics.consistency import ConsistencyCritic
from alphallm.critics.metrics import auc
from alphallm.errors import UserError
from alphallm.lm import load_lm
from alphallm.search import MCTSConfig
from alphallm.solve import SolveConfig, solve
from alphallm.tasks import get_task


@pytest.fixture(scope="module")
def arith_lm() -> Any:
    return load_lm("arith-base")


def _right_and_wrong(n: int) -> list[CriticInput]:
    """The reference solution of each of ``n`` arith dev problems and a wrong variant of it (one step
    slipped or miscopied, as the policies err), with the gold answers hidden."""
    task, rng = get_task("arith"), random.Random(0)
    items = []
    for problem in task.problems("dev"):
        right = task.solve(problem)
        wrong = task.corrupt(problem, right, rng)  # None where no such slip can be made
        if wrong is None:
            continue
        assert task.check(problem, wrong) is False
        hidden = replace(problem, answer=None)
        items += [CriticInput(hidden, right, True), CriticInput(hidden, wrong, True)]
        if len(items) == 2 * n:
            return items
    raise AssertionError("too few dev problems")


def test_the_policys_agreement_separates_right_solutions_from_its_kind_of_slips(arith_lm: Any) -> None:
    task = get_task("arith")
    items = _right_and_wrong(16)
    critic = ConsistencyCritic(task, arith_lm, samples=8, temperature=0.7)
    scores = critic.score(items)
    assert all(s is not None and (s * 8).is_integer() for s in scores)  # shares of 8 votes
    right, wrong = scores[0::2], scores[1::2]
    assert sum(right) / 16 >= sum(wrong) / 16 + 0.25  # type: ignore[arg-type]
    assert auc(scores, [1.0, 0.0] * 16) >= 0.8  # type: ignore[arg-type]
    drawn = critic.usage.generated_tokens
    assert drawn > 0
    # Each problem's samples are drawn once: scoring again costs nothing and gives the same scores.
    assert critic.score(items) == scores and critic.usage.generated_tokens == drawn
    # Partial solutions are not judged; a complete one that states no answer agrees with nothing.
    partial = CriticInput(items[0].problem, items[0].solution.splitlines(keepends=True)[0], False)
    unanswered = CriticInput(items[0].problem, "garbage\n", True)
    assert critic.score([partial, unanswered]) == [None, 0.0]


def test_the_gold_answer_never_enters_and_a_problems_samples_do_not_depend_on_the_calls_before(
    arith_lm: Any,
) -> None:
    task = get_task("arith")
    items = _right_and_wrong(4)
    one = ConsistencyCritic(task, arith_lm, samples=4, seed=3)
    first = one.score(items[:4])
    # A wrong gold answer changes nothing; nor does having sampled other problems before (a search's
    # batches, and so the shards of a distributed search, sample as they would alone).
    wrong_gold = [replace(item, problem=replace(item.problem, answer="99999")) for item in items[:4]]
    other = ConsistencyCritic(task, arith_lm, samples=4, seed=3)
    other.score(items[4:])
    assert other.score(wrong_gold) == first
    assert ConsistencyCritic(task, arith_lm, samples=4, seed=4).score(items[:4]) != first  # the seed matters


def test_tasks_whose_verifier_needs_no_answer_are_refused() -> None:
    task = get_task("game24")
    problem = task.problems("test")[0]
    critic = ConsistencyCritic(task, load_lm("game24-base"), samples=2)
    with pytest.raises(UserError, match="consistency critic compares answers"):
        critic.score([CriticInput(problem, "4*6=24 (left: 24)\nAnswer: 4*6 = 24\n", True)])
    # A search refuses it before it searches (not at its first complete solution).
    config = SolveConfig(weights={"consistency": 1.0}, mcts=MCTSConfig(num_simulations=2))
    policy = critic.lm.lm
    before = policy.usage.generated_tokens
    with pytest.raises(UserError, match="consistency critic compares answers"):
        solve(task, [problem], policy=policy, config=config)
    assert policy.usage.generated_tokens == before  # nothing was generated
    with pytest.raises(ValueError, match="temperature"):
        SolveConfig(weights={"consistency": 1.0}, consistency_temperature=0.0)


def test_a_search_with_the_consistency_critic_counts_its_samples(arith_lm: Any) -> None:
    task = get_task("arith")
    problems = task.problems("test")[:4]
    config = SolveConfig(
        weights={"consistency": 1.0, "rollout": 1.0},
        rollouts=1,
        prune=False,
        consistency_samples=3,
        batch_size=4,
        mcts=MCTSConfig(num_simulations=8),
    )
    report = solve(task, problems, policy=arith_lm, config=config, keep_trees=True)
    drawn = report.usage["critic:consistency"]["generated_tokens"]
    assert drawn > 0 and report.generated_tokens == drawn + sum(
        usage["generated_tokens"] for name, usage in report.usage.items() if name != "critic:consistency"
    )
    scored = [
        (node["critics"]["consistency"], node["terminal"])
        for result in report.results
        for node in result.tree["nodes"]  # type: ignore[index]
        if "consistency" in node["critics"]
    ]
    assert all(terminal and (share * 3).is_integer() for share, terminal in scored)  # on complete ones only
    # Rollouts are complete solutions: the consistency critic scores them when no verifier runs.
    rollouts = [
        r
        for result in report.results
        for node in result.tree["nodes"]
        for r in node["rollouts"]  # type: ignore[index]
    ]
    assert rollouts and all(r["score"] is not None and (r["score"] * 3).is_integer() for r in rollouts)


def test_eval_critic_scores_held_out_solutions_by_the_policys_agreement(tmp_path: Path) -> None:
    from alphallm.cli import main

    task = get_task("arith")
    for i, item in enumerate(_right_and_wrong(6)):
        nodes = [
            {"id": 0, "parent": -1, "text": ""},
            {"id": 1, "parent": 0, "text": item.solution, "terminal": True, "verified": i % 2 == 0},
        ]
        tree = {"task": "arith", "problem_id": f"p{i}", "root": task.format_prompt(item.problem)}
        (tmp_path / "trees").mkdir(exist_ok=True)
        (tmp_path / "trees" / f"{i}.json").write_text(json.dumps({**tree, "nodes": nodes}))
    args = ["eval-critic", "--critic", "consistency", "--trees", str(tmp_path / "trees")]
    out = tmp_path / "metrics.json"
    assert main([*args, "--model", "arith-base", "--samples", "8", "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["kind"] == "orm" and metrics["rows"] == 12 and metrics["auc"] >= 0.75
    assert main(args) == 2  # whose samples?
    assert main([*args, "--model", "arith-base", "--kind", "value"]) == 2
    assert main([*args, "--model", "arith-base", "--samples", "0"]) == 2
    assert (
        main(["eval-critic", "--critic", "tool", "--kind", "orm", "--model", "arith-base", "--trees", "x"])
        == 2
    )
