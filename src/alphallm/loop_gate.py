"""The policy gate's search guard (``evaluate.gate_search``). The dev score (greedy or sampled accuracy)
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
from alphallm.loop_solve import evaluation_searches, solve_with, solved_by_problem, solved_share

if TYPE_CHECKING:
    from alphallm.loop import Loop

__all__ = ["search_guard"]


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
