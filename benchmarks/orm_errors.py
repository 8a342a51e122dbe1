"""Which wrong solutions an arith outcome critic misses: its AUC against the right solutions of held-out
trees, for each kind of mistake.

    python benchmarks/orm_errors.py --trees runs/bench-critics/arith-dev-trees \
        --critics runs/bench-critics/arith-orm-confidence [DIR ...] [--made 4] [--out benchmarks/results]

Every verified complete solution of the trees is an ORM row (``orm_rows``, as ``eval-critic`` scores
them). A wrong one is classed by its first wrong line (``ArithTask.mistake``): a ``result`` slip, a
``miscopy`` (right arithmetic on a number that is not the one before it), a ``format`` error or a
wrong ``answer`` line. ``made`` rows are held-out wrong variants of the trees' right solutions,
written as ``train-critic --negatives`` writes them (``Task.corrupt``, seeded): a critic that
separates those but not the searched ones is missing the policy's own confident mistakes. Each critic
is scored on the right solutions against each class alone. Prints a table and writes
``orm_errors.json`` (one entry per trees and critic, replacing an earlier one).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from alphallm.critics.learned import LearnedCritic
from alphallm.critics.metrics import auc
from alphallm.io import write_json
from alphallm.tasks.arith import ArithTask
from alphallm.train.critic import task_corrupter
from alphallm.train.labels import LabelRow, corrupted_rows, orm_rows
from alphallm.trees import read_trees

MADE = "made (held out)"


def classes(task: ArithTask, rows: list[LabelRow], made: list[LabelRow]) -> dict[str, list[LabelRow]]:
    """The wrong rows by their first mistake, and the made ones."""
    out: dict[str, list[LabelRow]] = defaultdict(list)
    for row in rows:
        if row.target < 1.0:
            problem = task.problem_from_prompt(row.prompt, row.group)
            found = task.mistake(problem, row.solution) if problem is not None else None
            out[found[1] if found else "no wrong line"].append(row)
    out[MADE] = made
    return dict(out)


def score(critic: LearnedCritic, rows: list[LabelRow]) -> list[float]:
    return critic.score_texts([r.prompt for r in rows], [r.solution for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trees", required=True, help="held-out arith trees (search --save-trees)")
    parser.add_argument("--critics", required=True, nargs="+", help="ORM directories (train-critic --out)")
    parser.add_argument("--made", type=int, default=4, help="made wrong variants of each right solution")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    task = ArithTask()
    trees = read_trees([args.trees])
    if {tree.get("task") for tree in trees} != {"arith"}:
        parser.error(f"{args.trees}: not arith trees (search --task arith --save-trees)")
    rows = orm_rows(trees)
    right = [r for r in rows if r.target >= 1.0]
    made = corrupted_rows(right, task_corrupter(task), args.made, random.Random(args.seed))
    by_class = classes(task, rows, made)
    names = sorted(by_class, key=lambda name: (name == MADE, -len(by_class[name])))
    results: list[dict[str, Any]] = []
    for path in args.critics:
        critic = LearnedCritic.load(path, task=task)
        scored = dict(zip(rows + made, score(critic, rows + made), strict=True))  # each text read once
        positives = [scored[r] for r in right]
        wrong = [scored[r] for r in rows if r.target < 1.0]
        entry: dict[str, Any] = {
            "trees": args.trees,
            "critic": path,
            "right": len(right),
            "auc": auc(positives + wrong, [1.0] * len(positives) + [0.0] * len(wrong)),
            "classes": {},
        }
        for name in names:
            negatives = [scored[r] for r in by_class[name]]
            labels = [1.0] * len(positives) + [0.0] * len(negatives)
            entry["classes"][name] = {"rows": len(negatives), "auc": auc(positives + negatives, labels)}
        results.append(entry)
    print(f"\n{args.trees}: {len(right)} right solutions against each class of wrong ones (ORM AUC)")
    print("| critic | all | " + " | ".join(f"{n} ({len(by_class[n])})" for n in names) + " |")
    print("|---" * (len(names) + 2) + "|")
    for entry in results:
        cells = [f"{entry['classes'][n]['auc']:.3f}" for n in names]
        print(f"| {entry['critic']} | {entry['auc']:.3f} | " + " | ".join(cells) + " |")
    out = Path(args.out) / "orm_errors.json"
    kept = json.loads(out.read_text())["results"] if out.exists() else []
    fresh = {(e["trees"], e["critic"]) for e in results}
    write_json(out, {"results": [e for e in kept if (e["trees"], e["critic"]) not in fresh] + results})
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
