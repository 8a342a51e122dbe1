"""The policy gate: which of round k's candidates (SFT + DPO, SFT alone) is kept, if any (``gate_stage``),
and its search guard (``evaluate.gate_search``). The dev score (greedy or sampled accuracy)
sees how a policy decodes, not what it proposes: game24-small without adaptive branching kept policies
whose greedy rose while their eta-MCTS fell 0.70 -> 0.44, because SFT on few easy trees narrowed the
first steps they sample (benchmarks/README.md). With the guard a candidate that passes the dev score is
kept only if the evaluate stage's eta-MCTS (with the verifier) solves the first ``gate_search`` dev
problems no worse than the best policy kept so far, beyond twice the paired standard error. Comparing
with the best kept, not the last, stops a slide of steps each within noise."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from alphallm.io import write_json
from alphallm.loop_learn import nothing_to_learn
from alphallm.loop_solve import (
    choose_beyond_noise,
    evaluation_searches,
    solve_with,
    solved_by_problem,
    solved_share,
)

if TYPE_CHECKING:
    from alphallm.loop import Loop

__all__ = ["gate_stage", "search_guard"]


def gate_stage(loop: Loop, k: int) -> dict[str, Any]:
    """Keeps the round's best candidate on dev if it is not worse than the policy before it.
    When DPO ran, SFT alone is a candidate too, and SFT + DPO goes first only if it beats SFT alone
    beyond twice the paired standard error on the dev problems: a DPO step that hurts, ties or leads
    by noise keeps nothing. game24-small's round 1 kept SFT + DPO on a tie of 7 dev puzzles and its
    eta-MCTS fell 0.72 -> 0.40; the full-size game24 run's round 2 kept it on a lead of 0.006 (126
    puzzles, 16 samples each) and its learned-critics search fell 0.37 -> 0.15 (benchmarks/README.md)."""
    settings = loop.config.evaluate
    previous = loop.kept_dev_accuracy(k - 1)
    if nothing_to_learn(loop, k):  # no candidate: the policy before goes on, with its dev score
        return {
            "accepted": False,
            "kept": None,
            "nothing_trained": True,
            "dev_accuracy": previous,
            "candidates": {},
            "previous_dev_accuracy": previous,
            "dev_problems": settings.dev_problems,
            "metric": settings.gate_score,
        }
    names = ["policy"] if loop.read(k, "dpo").get("skipped") else ["policy", "sft"]
    scored = {name: loop.dev_scores(str(loop.round_dir(k) / name)) for name in names}
    scores = {name: score for name, (score, _) in scored.items()}
    dpo: dict[str, Any] = {}
    if "sft" in names:
        dpo = choose_beyond_noise({name: by_problem for name, (_, by_problem) in scored.items()}, "sft")
    order = names  # one candidate, or SFT + DPO first only if it beat SFT alone beyond noise
    if dpo:
        order = ["policy", "sft"] if dpo["kept"] == "policy" else ["sft", "policy"]
    passing = [name for name in order if scores[name] >= previous - settings.gate_tolerance]
    guard: dict[str, Any] = {}
    if settings.gate_search:  # the best-scoring candidate whose search holds up, if any
        for name in passing:
            guard[name] = search_guard(loop, k, name)
            if guard[name]["passed"]:
                break
        passing = [name for name in passing if guard.get(name, {}).get("passed")]
    kept = passing[0] if passing else order[0]
    return {
        "accepted": bool(passing),
        "kept": kept,
        "dev_accuracy": scores[kept],
        "candidates": scores,
        "previous_dev_accuracy": previous,
        "dev_problems": settings.dev_problems,
        "metric": settings.gate_score,
        **({"dpo_over_sft": dpo["changes"]["policy"]} if dpo else {}),
        **({"search_guard": {"problems": settings.gate_search, "candidates": guard}} if guard else {}),
    }


def search_guard(loop: Loop, k: int, name: str) -> dict[str, Any]:
    """Round k's candidate ``name`` against the best policy kept after rounds 0..k-1, on the dev search:
    their accuracies, the paired change and its standard error, and whether it ``passed``."""
    from alphallm.report.stats import paired_change

    kept = {loop.origin(j) for j in range(k)}
    searched = {origin: _dev_search(loop, *origin) for origin in sorted(kept)}
    # the best kept so far; on a tie the later one (the policy in use)
    best = max(searched, key=lambda o: (solved_share(searched[o]), o[0]))
    solved = _dev_search(loop, k, name)
    change = paired_change(searched[best], solved)
    return {
        "accuracy": solved_share(solved),
        "reference": {"round": best[0], "candidate": best[1], "accuracy": solved_share(searched[best])},
        "change": change["change"],
        "se": change["se"],
        "passed": change["change"] >= -2 * change["se"],
    }


def _dev_search(loop: Loop, j: int, name: str) -> dict[str, int]:
    """Per-problem outcomes of the dev search of round j's candidate ``name``, kept beside the round's
    other records (``gate_search-<name>.json``) so later rounds and a resumed gate reuse them. Every policy
    searches with the run's seed, so all meet the same draws; a record made with other settings is redone."""
    settings = loop.config.evaluate
    config = evaluation_searches(settings, {}, loop.config.seed)["mcts"]
    key = hashlib.sha256(
        json.dumps([settings.gate_search, asdict(config)], sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    path = loop.round_dir(j) / f"gate_search-{name}.json"
    if path.exists():
        record = json.loads(path.read_text())
        if record.get("settings") == key:
            return {pid: int(v) for pid, v in record["solved"].items()}
    problems = loop.split_problems("dev")[: settings.gate_search]
    policy = loop.candidate(j, name)
    with loop.ui.progress(f"round {j} gate search: {name}", len(problems)) as advance:
        report = solve_with(loop.task, problems, policy=policy, config=config, progress=advance)
    solved = solved_by_problem(report.results)
    write_json(path, {"settings": key, "accuracy": report.accuracy, "solved": solved})
    return solved
