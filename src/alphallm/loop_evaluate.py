"""A round's evaluation on the test split (``round-k/evaluate.json``; round 0's ``eval.json``). A round
whose gate kept nothing new evaluates the same policy as the round before: what would repeat (every
method with the same settings, the learned-critics search only with the same critics) is taken from that
round's record instead of decoded again, which for a 7 B policy is hours of search."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from alphallm.loop_solve import evaluate_policy, evaluation_key, repeated_methods

if TYPE_CHECKING:
    from alphallm.loop import Loop

__all__ = ["evaluate_round", "evaluate_stage"]


def evaluate_round(
    loop: Loop,
    k: int,
    critics: dict[str, str],
    before: Mapping[str, Any] | None = None,
    same_critics: bool = False,
) -> dict[str, Any]:
    """The policy kept after round k, evaluated with ``critics``, with the key its outcomes depend on.
    ``before`` is an earlier evaluation of the same policy: what this one would repeat is taken from it
    (``repeated``), the learned-critics search only with ``same_critics``."""
    test = loop.split_problems("test")
    settings, seed = loop.config.evaluate, loop.config.seed
    key = evaluation_key(settings, seed, test)
    reuse = repeated_methods(before, key=key, same_critics=same_critics) if before else {}
    record = evaluate_policy(
        loop.task,
        test,
        loop.policy(k),
        critics,
        settings,
        seed=seed,
        ui=loop.ui,
        label=f"round {k}",
        ray=loop.config.ray,
        chunks=loop.round_dir(k) / "eval.chunks",
        reuse=reuse,
    )
    repeated = {"repeated": {"round": k - 1, "methods": sorted(reuse)}} if reuse else {}
    return {**repeated, **record, "evaluation_key": key}


def evaluate_stage(loop: Loop, k: int) -> dict[str, Any]:
    """Round k's evaluation record: the policy, whether the gate accepted it, the critics in use (by the
    round that trained each: the critic gate may keep an earlier one) and every method's outcomes."""
    critics = loop.critics(k)
    before = None
    if loop.policy(k) == loop.policy(k - 1):
        before = json.loads((loop.round_dir(k - 1) / ("evaluate.json" if k > 1 else "eval.json")).read_text())
    record = evaluate_round(loop, k, critics, before=before, same_critics=critics == loop.critics(k - 1))
    return {
        "policy": loop.relative(loop.policy(k)),
        "accepted": loop.gate(k)["accepted"],
        "critics": {kind: j for kind, j in loop.critic_rounds(k).items() if kind in critics},
        **record,
    }
