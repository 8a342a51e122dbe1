"""Solving problems with a search method: eta-MCTS or a baseline, with the same models, critics and
compute accounting. This is where the pure search meets the backend and the critics."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alphallm.critics import OracleCritic, RolloutCritic, ToolCritic, make_evaluate_fn
from alphallm.critics.base import Critic
from alphallm.critics.consistency import ConsistencyCritic
from alphallm.critics.implicit_q import ImplicitQCritic
from alphallm.critics.learned import LearnedCritic, load_critics
from alphallm.evaluation import check_prompts_fit, finish_solution
from alphallm.lm import load_lm
from alphallm.lm.base import LanguageModel, Metered
from alphallm.lm.expand import make_expand_fn
from alphallm.search import beam_search, best_first, read_out, sample_chains, search
from alphallm.search.readout import Choice
from alphallm.search.tree import ROOT, Tree
from alphallm.search.types import EvaluateFn
from alphallm.solve_config import METHODS, SolveConfig
from alphallm.tasks.base import Problem, Task

__all__ = ["METHODS", "ProblemResult", "SolveConfig", "SolveReport", "solve"]


@dataclass
class ProblemResult:
    """The answer one search gave for one problem."""

    problem_id: str
    solution: str
    answer: str | None
    correct: bool | None
    readout: str
    score: float
    nodes: int
    tree: dict[str, Any] | None = None
    other_readouts: dict[str, bool] = field(default_factory=dict)


@dataclass
class SolveReport:
    """Results, accuracy and compute (tokens and calls per model) of one method on a problem set."""

    method: str
    results: list[ProblemResult]
    usage: dict[str, dict[str, int]]
    wall_seconds: float
    config: dict[str, Any]

    @property
    def accuracy(self) -> float:
        return sum(bool(r.correct) for r in self.results) / max(1, len(self.results))

    @property
    def generated_tokens(self) -> int:
        return sum(u["generated_tokens"] for u in self.usage.values())

    def compared_readouts(self) -> dict[str, float]:
        """Accuracy of each of ``config.compare_readouts`` on the same trees."""
        names = self.config.get("compare_readouts") or []
        n = max(1, len(self.results))
        return {name: sum(r.other_readouts.get(name, False) for r in self.results) / n for name in names}

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "problems": len(self.results),
            "accuracy": self.accuracy,
            "generated_tokens": self.generated_tokens,
            "prefill_tokens": sum(u["prefill_tokens"] for u in self.usage.values()),
            "mean_nodes": float(np.mean([r.nodes for r in self.results])) if self.results else 0.0,
            "readouts": {
                k: sum(r.readout == k for r in self.results) for k in {r.readout for r in self.results}
            },
            "usage": self.usage,
            "wall_seconds": round(self.wall_seconds, 3),
        } | ({"compared_readouts": self.compared_readouts()} if self.config.get("compare_readouts") else {})


@dataclass
class _Critics:
    """The critics a run uses: ``scorers`` value every new node; ``outcome`` scores rollouts;
    ``metered`` are those that run a model, by the name their compute is reported under."""

    scorers: list[Critic]
    outcome: Critic | None
    metered: dict[str, LearnedCritic | ConsistencyCritic | ImplicitQCritic]


def _build_critics(
    task: Task, problems: Sequence[Problem], config: SolveConfig, policy: LanguageModel, device: str | None
) -> _Critics:
    """Tool and oracle critics by weight, learned critics from ``config.critic_dirs``. Rollouts are
    scored by the tool verifier when it is in use, else by the consistency critic when it has a
    weight (arith's held-out ORM AUC: 0.90 against the learned ORM's 0.73), else by a learned ORM
    (never by the gold-answer oracle, which only ever enters a value through its own weight)."""
    learned = load_critics(config.critic_dirs, task=task, device=device)
    tool = ToolCritic(task, reachability=config.reachability)
    available: dict[str, Critic] = {"tool": tool, "oracle": OracleCritic(task), **learned}
    metered: dict[str, LearnedCritic | ConsistencyCritic | ImplicitQCritic] = dict(learned)
    if config.weights.get("implicit_q", 0.0) > 0:
        if config.anchor is None:
            raise ValueError("the implicit_q critic needs an anchor model (SolveConfig.anchor)")
        implicit_q = ImplicitQCritic(task, policy, load_lm(config.anchor, device=device))
        available["implicit_q"] = metered["implicit_q"] = implicit_q
    if config.weights.get("consistency", 0.0) > 0:
        consistency = ConsistencyCritic(
            task,
            policy,
            samples=config.consistency_samples,
            temperature=config.consistency_temperature,
            seed=config.seed,
            max_tokens=config.max_tokens,
        )
        if problems:  # refused before any search, not at its first complete solution
            consistency.check_task(problems[0])
        available["consistency"] = metered["consistency"] = consistency
    scorers = [critic for name, critic in available.items() if config.weights.get(name, 0.0) > 0]
    outcome: Critic | None = None
    if config.weights.get("tool", 0.0) > 0 and task.has_step_verifier:
        outcome = available["tool"]
    elif "consistency" in available:
        outcome = available["consistency"]
    elif "orm" in learned:
        outcome = learned["orm"]
    return _Critics(scorers, outcome, metered)


def _run_batch(
    task: Task,
    problems: Sequence[Problem],
    config: SolveConfig,
    policy: Metered,
    rollout_lm: Metered,
    critics: _Critics,
    rng: np.random.Generator,
) -> tuple[Tree, str]:
    """Searches one batch of problems; returns the trees and the read-out to apply."""
    roots = [task.format_prompt(p) for p in problems]
    expand_fn = make_expand_fn(task, policy, temperature=config.temperature)
    rollout = None
    if (
        config.rollouts > 0
        and config.weights.get("rollout", 0.0) > 0
        and config.method in ("mcts", "beam", "bfs")
        and critics.outcome is not None
    ):
        rollout = RolloutCritic(
            task,
            rollout_lm,
            critics.outcome,
            n=config.rollouts,
            temperature=config.rollout_temperature,
            max_tokens=config.max_tokens,
        )
    evaluate_fn: EvaluateFn = make_evaluate_fn(
        task,
        problems,
        critics=critics.scorers,
        weights=config.weights,
        rollout=rollout,
        prune_with=config.prune_with
        if config.prune and config.weights.get(config.prune_with, 0.0) > 0
        else None,
        prune_below=config.prune_below,
        seed=int(rng.integers(0, 2**31 - 1)),
    )
    depth = min(task.max_steps, config.mcts.max_depth)
    if config.method == "mcts":
        return search(
            roots, expand_fn=expand_fn, evaluate_fn=evaluate_fn, config=config.mcts, rng=rng
        ), config.readout
    if config.method == "greedy":
        tree = sample_chains(
            roots, expand_fn=expand_fn, evaluate_fn=None, n=1, max_depth=depth, rng=rng, greedy=True
        )
        return tree, "best_value"
    if config.method == "sc":
        tree = sample_chains(
            roots, expand_fn=expand_fn, evaluate_fn=None, n=config.samples, max_depth=depth, rng=rng
        )
        return tree, "majority"
    if config.method == "bon":
        tree = sample_chains(
            roots, expand_fn=expand_fn, evaluate_fn=evaluate_fn, n=config.samples, max_depth=depth, rng=rng
        )
        return tree, "best_value"
    if config.method == "beam":
        tree = beam_search(
            roots,
            expand_fn=expand_fn,
            evaluate_fn=evaluate_fn,
            beam_width=config.beam_width,
            expansions=config.expansions,
            max_depth=depth,
            rng=rng,
        )
        return tree, "best_value"
    tree = best_first(
        roots,
        expand_fn=expand_fn,
        evaluate_fn=evaluate_fn,
        expansions=config.expansions,
        budget=config.bfs_budget,
        max_depth=depth,
        rng=rng,
    )
    return tree, "best_value"


def _deepest_live(tree: Tree, b: int) -> int:
    """Follows the most-visited child that is not a dead end, from the root down."""
    node = ROOT
    while True:
        kids = [int(c) for c in tree.child_ids(b, node) if not tree.pruned[b, c]]
        if not kids:
            return node
        node = max(kids, key=lambda c: (tree.visits[b, c], tree.q(b, c)))


def _complete_unfinished(
    task: Task,
    tree: Tree,
    choices: list[Choice | None],
    policy: Metered,
    *,
    seed: int,
    max_tokens: int | None = None,
) -> list[Choice]:
    """Trees that reached no complete solution answer with their best path completed greedily by
    the policy (one batched call; its tokens are counted), as AlphaLLM's read-outs do."""
    todo = [b for b, choice in enumerate(choices) if choice is None]
    out = [c if c is not None else Choice("", 0, "none", 0.0) for c in choices]
    if not todo:
        return out
    nodes = [_deepest_live(tree, b) for b in todo]
    completions = policy.sample(
        [tree.state(b, node) for b, node in zip(todo, nodes)],
        temperature=0.0,
        max_tokens=task.token_limit(max_tokens),
        seed=seed,
    )
    for b, node, (completion,) in zip(todo, nodes, completions):
        text = finish_solution(task, completion)  # the whole solution is cut again where it is read
        out[b] = Choice(tree.solution(b, node) + text, node, "completed", tree.q(b, node))
    return out


def _compare_readouts(
    task: Task,
    batch: Sequence[Problem],
    tree: Tree,
    names: Sequence[str],
    answered: list[Choice],
    policy: LanguageModel,
    *,
    seed: int,
    max_tokens: int | None,
) -> list[dict[str, bool]]:
    """Whether each read-out in ``names`` would have answered each tree rightly. One that finds no
    solution answers with the best path completed, as the search's own read-out does: the search ran
    that completion when its read-out found none too; elsewhere it runs here, on a meter of its own,
    since it is no part of the search's compute."""
    if not names:
        return [{} for _ in batch]
    picks = {
        name: [read_out(tree, b, name, task.extract_answer) for b in range(len(batch))] for name in names
    }
    missing = {b for name in names for b, pick in enumerate(picks[name]) if pick is None}
    fallback = _complete_unfinished(
        task,
        tree,
        [None if b in missing and a.readout != "completed" else a for b, a in enumerate(answered)],
        Metered(policy),
        seed=seed,
        max_tokens=max_tokens,
    )
    return [
        {
            name: bool(task.check(problem, task.truncate((picks[name][b] or fallback[b]).solution)))
            for name in names
        }
        for b, problem in enumerate(batch)
    ]


def solve(
    task: Task,
    problems: Sequence[Problem],
    *,
    policy: LanguageModel,
    config: SolveConfig,
    rollout_lm: LanguageModel | None = None,
    keep_trees: bool = False,
    progress: Callable[[int], None] | None = None,
    device: str | None = None,
    offset: int = 0,
) -> SolveReport:
    """Searches every problem with ``config.method`` and reads out one solution per problem.

    Compute is metered per model: ``usage["policy"]`` and ``usage["rollout"]`` (the rollout model
    defaults to the policy itself, decoded greedily, but is counted apart).

    ``offset`` is the index of ``problems[0]`` in a larger problem set (a multiple of
    ``config.batch_size``): a shard solved with its offset gets the same results as in a run over
    the whole set, since each batch is seeded by (seed, its position) alone.
    """
    if offset % config.batch_size:
        raise ValueError("offset must be a multiple of batch_size (shards are whole batches)")
    check_prompts_fit(task, problems, policy)
    critics = _build_critics(task, problems, config, policy, device)
    policy_view = Metered(policy)
    rollout_view = Metered(rollout_lm if rollout_lm is not None else policy)
    started = time.perf_counter()
    results: list[ProblemResult] = []
    answer_fn = task.extract_answer
    for start in range(0, len(problems), config.batch_size):
        batch = problems[start : start + config.batch_size]
        # A batch's randomness depends on (seed, its position in the whole set) only, not on the
        # batches before it, so shards on other processes reproduce it (distributed/). [seed, 0]
        # seeds exactly like default_rng(seed), so the first batch is as it always was.
        rng = np.random.default_rng([config.seed, offset + start])
        tree, readout = _run_batch(task, batch, config, policy_view, rollout_view, critics, rng)
        found = [read_out(tree, b, readout, answer_fn) for b in range(len(batch))]
        choices = _complete_unfinished(
            task, tree, found, policy_view, seed=config.seed + offset + start, max_tokens=config.max_tokens
        )
        others = _compare_readouts(
            task,
            batch,
            tree,
            config.compare_readouts,
            choices,
            policy,
            seed=config.seed + offset + start,
            max_tokens=config.max_tokens,
        )
        for b, problem in enumerate(batch):
            choice = choices[b]
            solution = task.truncate(choice.solution)
            correct = task.check(problem, solution)
            saved = None
            if keep_trees:
                saved = tree.to_dict(b) | {"problem_id": problem.id, "task": task.name}
                if choice.readout == "completed":
                    # The greedy completion of the best path is not in the tree; without rollouts it is
                    # often the only complete solution the search found, so training data needs it.
                    saved["completed"] = {"node": choice.node, "solution": solution, "verified": correct}
            results.append(
                ProblemResult(
                    problem_id=problem.id,
                    solution=solution,
                    answer=task.extract_answer(solution),
                    correct=correct,
                    readout=choice.readout,
                    score=choice.score,
                    nodes=int(tree.num_nodes[b]),
                    tree=saved,
                    other_readouts=others[b],
                )
            )
        if progress is not None:
            progress(len(batch))
    return SolveReport(
        method=config.method,
        results=results,
        usage={
            "policy": policy_view.usage.to_dict(),
            "rollout": rollout_view.usage.to_dict(),
            **{f"critic:{name}": critic.usage.to_dict() for name, critic in critics.metered.items()},
        },
        wall_seconds=time.perf_counter() - started,
        config=config.to_dict(),
    )
