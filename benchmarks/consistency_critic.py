"""The consistency critic as an outcome critic, and eta-MCTS with it and no verifier, on arith.

    python benchmarks/consistency_critic.py [--work runs/bench-critics] [--test-problems 100]

Uses the arith trees and learned critics of ``benchmarks/critics.py`` under ``--work`` (run
``python benchmarks/critics.py --tasks arith`` first; it takes about 10 minutes):

1. ORM AUC on the held-out dev trees' complete solutions: the consistency critic (the share of the
   base model's sampled solutions of the problem that reach a solution's answer;
   ``alphallm/critics/consistency.py``) at each number of samples and temperature in ``GRID``, and at
   the default with other seeds; the learned ORM of ``critics.py``; and the mean of the two.
2. eta-MCTS on the test problems with no verifier at test time, the shipped search config, 48
   simulations: the learned critics with the consistency critic, and the consistency critic alone
   scoring two rollouts per node; against the searches with no critics at as many generated tokens
   (a wider root, ``critics.py``'s ladder) and self-consistency (a majority vote over N sampled
   solutions) at as many tokens. The consistency critic's own samples are counted in the tokens.

Prints two tables and adds the run to ``results/consistency_critic.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from _sweep import append_result
from critics import LEARNED, MATCHED_ROOT_WIDTHS, SEARCH_MODES, _search

from alphallm.critics.base import row_inputs
from alphallm.critics.consistency import ConsistencyCritic
from alphallm.critics.learned import LearnedCritic
from alphallm.critics.metrics import auc, auc_within
from alphallm.lm import load_lm
from alphallm.tasks.arith import ArithTask
from alphallm.train.labels import orm_rows
from alphallm.trees import read_trees

GRID = ((4, 0.7), (8, 0.7), (16, 0.7), (8, 1.0), (16, 1.0))
SEEDS = (1, 2)  # more seeds at the default (8 samples at 0.7)
SC_SAMPLES = (8, 16, 32, 64)  # self-consistency, tried in order until it spends as many tokens
CONSISTENCY = {"consistency": 1.0}
SEARCHES: dict[str, dict[str, Any]] = {
    "learned critics + consistency": {**LEARNED, "weights": {**LEARNED["weights"], **CONSISTENCY}},
    "consistency, 2 rollouts": {
        "weights": {**CONSISTENCY, "rollout": 1.0},
        "rollouts": 2,
        "rollout_temperature": 1.0,
        "prune": False,
    },
}


def orm_quality(work: Path) -> list[dict[str, Any]]:
    task = ArithTask()
    rows = orm_rows(read_trees([str(work / "arith-dev-trees")]))
    labels = [row.target >= 1.0 for row in rows]
    groups = [row.group for row in rows]
    items = [replace(item, terminal=True) for item in row_inputs(task, rows)]  # ORM rows are complete
    lm = load_lm("arith-base")
    learned = LearnedCritic.load(str(work / "arith-orm-confidence"), task=task)
    orm = np.asarray(learned.score(items), np.float64)

    def measured(scores: np.ndarray) -> dict[str, float]:
        return {
            "auc": auc(scores.tolist(), labels),
            "auc_within": auc_within(scores.tolist(), labels, groups),
        }

    out = [{"critic": "learned ORM (confidence)", **measured(orm)}]
    for samples, temperature in GRID:
        for seed in (0, *SEEDS) if (samples, temperature) == (8, 0.7) else (0,):
            critic = ConsistencyCritic(task, lm, samples=samples, temperature=temperature, seed=seed)
            scores = np.asarray(critic.score(items), np.float64)
            entry = {"critic": "consistency", "samples": samples, "temperature": temperature, "seed": seed}
            entry |= measured(scores) | {
                f"mean_with_orm_{k}": v for k, v in measured((scores + orm) / 2).items()
            }
            entry |= {"generated_tokens": critic.usage.generated_tokens, "problems": len(set(groups))}
            out.append(entry)
            print(entry, flush=True)
    return out


def searches(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    learned = []
    for kind in ("value", "prm", "orm"):
        learned += ["--critic", f"{kind}={work / f'arith-{kind}-confidence'}"]
    out: dict[str, Any] = {}
    for mode, extra in SEARCHES.items():
        flags = learned if "learned" in mode else []
        out[mode] = _search(
            "arith", args, work, extra, flags, mode.replace(" ", "-").replace(",", "").replace("+", "and")
        )
    target = max(result["generated_tokens"] for result in out.values())
    ladder = []
    for width in MATCHED_ROOT_WIDTHS:
        mcts = {"c_min_root": width, "c_max_root": width, "c_min": 1, "num_simulations": width * 12}
        extra = {**SEARCH_MODES["no critics"], "mcts": mcts}
        ladder.append({**_search("arith", args, work, extra, [], f"no-critics-root{width}"), **mcts})
        if ladder[-1]["generated_tokens"] >= target:
            break
    out["no critics, matched tokens"] = {**ladder[-1], "ladder": ladder}
    votes = []
    for samples in SC_SAMPLES:
        votes.append(
            {
                **_search("arith", args, work, {"method": "sc", "samples": samples}, [], f"sc{samples}"),
                "samples": samples,
            }
        )
        if votes[-1]["generated_tokens"] >= target:
            break
    out["self-consistency, matched tokens"] = {**votes[-1], "ladder": votes}
    out["no critics (greedy chain)"] = _search(
        "arith", args, work, SEARCH_MODES["no critics"], [], "no-critics"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", default="runs/bench-critics", help="benchmarks/critics.py's --work")
    parser.add_argument("--test-problems", type=int, default=100)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    args.sweep_problems = 100  # _search reads it; no dev search runs here
    work = Path(args.work)
    for needed in (
        "arith-dev-trees",
        "arith-orm-confidence",
        "arith-value-confidence",
        "arith-prm-confidence",
    ):
        if not (work / needed).exists():
            raise SystemExit(
                f"{work / needed} is missing: run python benchmarks/critics.py --tasks arith first"
            )
    quality = orm_quality(work)
    searched = searches(work, args)
    header = f"{'AUC':>6s} {'within':>7s} {'+ ORM':>6s} {'within':>7s}"
    print(f"\n{'outcome critic (arith held-out dev trees)':44s} {header}")
    for entry in quality:
        name = entry["critic"]
        if "samples" in entry:
            name += f", {entry['samples']} at {entry['temperature']}, seed {entry['seed']}"
        print(
            f"{name:44s} {entry['auc']:6.3f} {entry['auc_within']:7.3f} "
            f"{entry.get('mean_with_orm_auc', math.nan):6.3f} "
            f"{entry.get('mean_with_orm_auc_within', math.nan):7.3f}"
        )
    print(f"\n{'eta-MCTS, no verifier (arith test)':36s} {'accuracy':>8s} {'gen tokens':>11s}")
    for mode, result in searched.items():
        print(f"{mode:36s} {result['accuracy']:8.3f} {result['generated_tokens']:11d}")
    append_result(
        args.out, "consistency_critic.json", {"args": vars(args), "orm": quality, "search": searched}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
