"""Searching and evaluating a policy given by name, in this process or over Ray actors, with the
search streamed to disk chunk by chunk so that a killed stage of the loop resumes mid-way."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from alphallm.distributed.config import RayConfig
from alphallm.solve import SolveReport
from alphallm.solve_config import SolveConfig
from alphallm.tasks.base import Problem

__all__ = [
    "CRITICS_READOUTS",
    "choose_beyond_noise",
    "critic_search_gate",
    "evaluate_policy",
    "evaluation_key",
    "evaluation_searches",
    "repeated_methods",
    "solve_with",
    "solved_by_problem",
    "solved_share",
]


def solve_with(
    task: Any,
    problems: list[Problem],
    *,
    policy: str,
    config: SolveConfig,
    ray: RayConfig | None = None,
    chunks: Path | None = None,
    lm: Any = None,
    **kwargs: Any,
) -> SolveReport:
    """``solve`` here (with ``lm``, or ``policy`` loaded), or over Ray actors when ``ray`` is enabled;
    either way its finished chunks are kept in ``chunks`` so that a killed stage resumes mid-way."""
    if ray is not None and ray.enabled and chunks is not None:
        from alphallm.distributed import solve_on_ray

        return solve_on_ray(
            task, problems, model=policy, config=config, ray_config=ray, out_dir=chunks, **kwargs
        )
    from alphallm.lm import load_lm

    lm = lm if lm is not None else load_lm(policy)
    if chunks is not None:
        from alphallm.distributed import solve_in_chunks

        return solve_in_chunks(
            task, problems, model=policy, policy=lm, config=config, out_dir=chunks, **kwargs
        )
    from alphallm.solve import solve

    return solve(task, problems, policy=lm, config=config, **kwargs)


# The read-outs of the learned-critics search that every evaluation scores.
CRITICS_READOUTS = ("best_value", "vote")


def evaluation_searches(settings: Any, critics: dict[str, str], seed: int) -> dict[str, SolveConfig]:
    """The test-time searches: eta-MCTS as configured (with the task's verifier), and, given learned
    critics, eta-MCTS with only those critics and rollouts, where no tool prunes; with
    ``critics_prune_below`` set, the PRM prunes instead (a soft verifier for tasks without one), in the
    rounds that have one (a round with too few labels for it trains none)."""
    runs = {"mcts": replace(settings.search, seed=seed)}
    if critics:
        tau = settings.critics_prune_below if "prm" in critics else None
        runs["mcts_critics"] = replace(
            settings.search,
            seed=seed,
            critic_dirs=critics,
            weights={**{kind: 1.0 for kind in critics}, "rollout": 1.0},
            readout=settings.critics_readout,
            # Both read-outs that suit learned critics, scored on the same trees at no cost: which one
            # wins differs by task (benchmarks/README.md, "a vote in its place").
            compare_readouts=[r for r in CRITICS_READOUTS if r != settings.critics_readout],
            prune=tau is not None,
            **({"prune_with": "prm", "prune_below": tau} if tau is not None else {}),
        )
    return runs


def evaluate_policy(
    task: Any,
    test: list[Problem],
    policy: str,
    critics: dict[str, str],
    settings: Any,
    *,
    seed: int,
    ui: Any,
    label: str,
    ray: RayConfig | None = None,
    chunks: Path | None = None,
    reuse: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Accuracy and compute of a policy on the ``test`` problems: greedy, eta-MCTS with the task's
    verifier, eta-MCTS with only the learned critics (no verifier), and self-consistency at eta-MCTS's
    token budget; each with its per-problem outcomes (``solved``: problem id -> 0 or 1).
    With ``ray`` enabled the searches run on Ray actors (greedy decoding stays here: it is cheap).
    A method in ``reuse`` (an earlier evaluation's record that this one would repeat) is taken as it is."""
    from alphallm.evaluation import eval_store, evaluate
    from alphallm.lm import load_lm

    reuse = dict(reuse or {})
    searches = evaluation_searches(settings, critics, seed)
    methods = ["greedy", *searches, *(["sc"] * settings.self_consistency)]
    lm: Any = load_lm(policy) if set(methods) - set(reuse) else None  # none when all is reused
    out: dict[str, Any] = {name: reuse[name] for name in methods if name in reuse}
    if "greedy" not in out:
        greedy_settings: dict[str, Any] = {"method": "greedy", "max_tokens": settings.max_tokens}
        # Streamed to disk: a stage killed later, in its searches, does not decode them again.
        store = eval_store(chunks / "greedy", task, test, policy, **greedy_settings) if chunks else None
        greedy = evaluate(task, lm, test[: settings.test_problems], **greedy_settings, store=store)
        out["greedy"] = {
            "accuracy": greedy.metrics["accuracy"],
            "tokens_per_problem": greedy.usage["generated_tokens"] / max(1, greedy.problems),
            "solved": solved_by_problem(greedy.records),
        }
    problems = test[: settings.search_problems]
    for name, config in searches.items():
        if name in out:
            continue
        with ui.progress(f"{label} eval {name}", len(problems)) as advance:
            report = solve_with(
                task,
                problems,
                policy=policy,
                lm=lm,
                config=config,
                ray=ray,
                chunks=chunks / name if chunks else None,
                progress=advance,
            )
        out[name] = {
            "accuracy": report.accuracy,
            "tokens_per_problem": report.generated_tokens / max(1, len(problems)),
            "solved": solved_by_problem(report.results),
        }
        if config.compare_readouts:  # the same trees read out other ways: {read-out: accuracy, solved}
            out[name]["other_readouts"] = {
                readout: {
                    "accuracy": accuracy,
                    "solved": {r.problem_id: int(r.other_readouts[readout]) for r in report.results},
                }
                for readout, accuracy in report.compared_readouts().items()
            }
        if name == "mcts_critics" and config.prune:  # the PRM as a soft verifier: say so in the record
            out[name]["prm_prunes_below"] = config.prune_below
    if settings.self_consistency and "sc" not in out:
        samples = max(
            2,
            min(64, round(out["mcts"]["tokens_per_problem"] / max(1.0, out["greedy"]["tokens_per_problem"]))),
        )
        report = solve_with(
            task,
            problems,
            policy=policy,
            lm=lm,
            ray=ray,
            chunks=chunks / "sc" if chunks else None,
            config=replace(
                settings.search, method="sc", samples=samples, temperature=settings.sc_temperature, seed=seed
            ),
        )
        out["sc"] = {
            "accuracy": report.accuracy,
            "tokens_per_problem": report.generated_tokens / max(1, len(problems)),
            "samples": samples,
            "solved": solved_by_problem(report.results),
        }
    return {name: out[name] for name in methods}


def evaluation_key(settings: Any, seed: int, test: list[Problem]) -> str:
    """What an evaluation's outcomes depend on besides the policy and its critics: the evaluate settings,
    the seed and the test problems. Two evaluations of one policy with the same key give the same records."""
    what = [asdict(settings), seed, [(p.id, p.question, p.answer) for p in test]]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def repeated_methods(before: Mapping[str, Any], *, key: str, same_critics: bool) -> dict[str, Any]:
    """The records of an evaluation of the same policy (``before``) that a new one would repeat: all of
    them when it was made with the same ``key``, but the learned-critics search only with the same critics."""
    if before.get("evaluation_key") != key:
        return {}
    methods = ("greedy", "mcts", "sc") + (("mcts_critics",) if same_critics else ())
    return {name: before[name] for name in methods if name in before}


def critic_search_gate(
    task: Any,
    problems: list[Problem],
    *,
    policy: str,
    candidates: dict[str, dict[str, str]],
    default: str,
    settings: Any,
    seed: int,
    ui: Any,
    label: str,
) -> dict[str, Any]:
    """Which critic set guides search best: each distinct set in ``candidates`` (name -> kind -> critic
    directory) runs the learned-critics search (``evaluation_searches``) on ``problems`` with ``policy``,
    and ``choose_beyond_noise`` picks. A set listed twice is searched once."""
    from alphallm.lm import load_lm

    lm = load_lm(policy)  # once: every set guides the same policy
    solved: dict[str, dict[str, int]] = {}
    searched: dict[tuple[tuple[str, str], ...], str] = {}
    for name, critics in candidates.items():
        key = tuple(sorted(critics.items()))
        if key in searched:
            solved[name] = solved[searched[key]]
            continue
        searched[key] = name
        config = evaluation_searches(settings, critics, seed)["mcts_critics"]
        with ui.progress(f"{label} critic search gate: {name}", len(problems)) as advance:
            report = solve_with(task, problems, policy=policy, lm=lm, config=config, progress=advance)
        solved[name] = solved_by_problem(report.results)
    return {"problems": len(problems), "policy": policy, **choose_beyond_noise(solved, default)}


def choose_beyond_noise(scores: Mapping[str, Mapping[str, float]], default: str) -> dict[str, Any]:
    """``default`` unless another candidate scores higher on the same problems (``scores``: name ->
    problem id -> 1/0 solved, or a share of samples) by more than twice the standard error of the paired
    difference (the largest such gain wins): a gap within noise is no reason to leave the default (the
    held-out critic gate's pick; SFT alone before SFT + DPO)."""
    from alphallm.report.stats import paired_change

    accuracy = {name: solved_share(s) for name, s in scores.items()}
    changes = {name: paired_change(scores[default], s) for name, s in scores.items() if name != default}
    better = {name: c for name, c in changes.items() if c["change"] > 2 * c["se"]}
    kept = max(better, key=lambda name: better[name]["change"]) if better else default
    return {"accuracy": accuracy, "changes": changes, "kept": kept}


def solved_by_problem(records: Iterable[Any]) -> dict[str, int]:
    """Each problem's outcome by id (1: solved), from search results or greedy eval records, so that
    rounds and variants can be compared problem by problem (``report.stats.paired_change``)."""
    return {r.problem_id: int(bool(r.correct)) for r in records}


def solved_share(solved: Mapping[str, float]) -> float:
    """The accuracy of a ``solved_by_problem`` map (0.0 when it is empty)."""
    return sum(solved.values()) / max(1, len(solved))
