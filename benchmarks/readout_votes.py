"""Read-outs over saved trees: the best-scored solution, a vote over the answers weighted by their
scores, and the same vote counting each distinct text once.

    python benchmarks/readout_votes.py --task arith TREES... [--split test] [--out FILE]

Writes ``results/readout_votes-<task>.json`` unless ``--out`` says otherwise.

TREES are files or directories of ``alphallm search --save-trees``. A tree's candidates are what the
search's read-outs choose among (``search/readout.py``): its terminal nodes, scored by their critic
values, and its completed rollouts, scored by theirs. Each candidate is checked against the problem's
gold answer. The table shows how often each read-out is right, how many candidates repeat an earlier
candidate's text exactly, and, where best value and the vote disagree, how many copies stood behind
the vote's answer: a vote counts a solution once per copy, so repeats weigh it up.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from alphallm.io import write_json
from alphallm.tasks import get_task
from alphallm.train.labels import complete_solutions
from alphallm.trees import read_trees

Candidate = tuple[str, float, str | None, bool]  # text, score, answer, right


def candidates(task: Any, problem: Any, tree: dict[str, Any]) -> list[Candidate]:
    out = []
    for c in complete_solutions({**tree, "completed": None}):  # the read-outs never see the completion
        text = task.truncate(c.solution)
        out.append((text, c.score, task.extract_answer(text), bool(task.check(problem, text))))
    return out


def vote(pool: list[Candidate], *, distinct: bool) -> tuple[bool, int]:
    """Whether the score-weighted vote is right, and how many candidates carry its answer."""
    totals: dict[str, float] = defaultdict(float)
    right: dict[str, bool] = {}
    copies: dict[str, int] = defaultdict(int)
    seen: set[str] = set()
    for text, score, answer, ok in pool:
        if answer is None or (distinct and text in seen):
            continue
        seen.add(text)
        totals[answer] += score
        right[answer] = ok
        copies[answer] += 1
    if not totals:
        return False, 0
    winner = max(totals, key=lambda a: totals[a])
    return right[winner], copies[winner]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("trees", nargs="+")
    parser.add_argument("--task", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", help="JSON of the figures (default: results/readout_votes-<task>.json)")
    args = parser.parse_args(argv)
    task = get_task(args.task)
    problems = {p.id: p for p in task.problems(args.split)}
    counts = {"best_value": 0, "vote": 0, "distinct_vote": 0, "candidates": 0, "repeats": 0}
    disagree = []
    trees = read_trees(args.trees)
    for tree in trees:
        pool = candidates(task, problems[tree["problem_id"]], tree)
        counts["candidates"] += len(pool)
        counts["repeats"] += len(pool) - len({text for text, *_ in pool})
        best = bool(pool) and max(pool, key=lambda c: c[1])[3]  # the first of equal scores, as search does
        voted, copies = vote(pool, distinct=False)
        counts["best_value"] += best
        counts["vote"] += voted
        counts["distinct_vote"] += vote(pool, distinct=True)[0]
        if best != voted:
            disagree.append(
                {"problem": tree["problem_id"], "right": "best_value" if best else "vote", "copies": copies}
            )
    n = len(trees)
    print(
        f"{'trees':>6s} {'best value':>10s} {'vote':>6s} {'distinct vote':>14s} {'repeated candidates':>20s}"
    )
    print(
        f"{n:6d} {counts['best_value'] / n:10.2f} {counts['vote'] / n:6.2f} "
        f"{counts['distinct_vote'] / n:14.2f} {counts['repeats']:>9d} of {counts['candidates']:<8d}"
    )
    for d in disagree:
        print(f"  {d['problem']}: {d['right']} right; the vote's answer had {d['copies']} candidates")
    out = Path(args.out or Path(__file__).parent / "results" / f"readout_votes-{args.task}.json")
    write_json(out, {"task": args.task, "trees": n, **counts, "disagree": disagree})
    print(json.dumps({"written": str(out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
