"""How far supervised fine-tuning on clean solutions can take a shipped base model: the ceiling the
self-improvement loop climbs towards, and how much data and training it takes to get there.

    python benchmarks/sft_headroom.py --task arith --rows 3000 12000 --lr 5e-4 --epochs 3
    python benchmarks/sft_headroom.py --task game24 --per-puzzle 4 --lr 1e-3 --epochs 10

arith: the exact teacher's solutions (no slips) of fresh train-split problems with 4-6 operations,
the test split's difficulty; measured by greedy accuracy on the dev split, by number of operations.
game24: ``--per-puzzle`` distinct solver solutions of every solvable train puzzle (the loop can never
see more puzzles than these); measured on the Tree of Thoughts test puzzles, greedy and pass@16 at
temperature 0.7. ``--wide-puzzles N`` trains instead on those rows plus as many solutions of N puzzles
with numbers up to ``--wide-max`` (at least one above 13): does greedy lack puzzles rather than solutions?
Neither is self-improvement: the data comes from an oracle, which the loop has not.
Prints a table and writes ``sft_headroom-<task>.json``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict
from typing import Any

import torch
from _sweep import append_result

from alphallm.evaluation import evaluate
from alphallm.lm.hf import TransformersLM
from alphallm.lm.loading import load_causal_lm
from alphallm.tasks import get_task
from alphallm.tasks.arith import ArithTask
from alphallm.tasks.base import Problem, Task
from alphallm.tasks.game24 import solve_numbers
from alphallm.train.sft import SFTConfig, sft


def arith_rows(task: Task, n: int, seed: int) -> list[tuple[str, str]]:
    assert isinstance(task, ArithTask)  # the teacher's solutions: arith's own solver
    problems = task.generate(random.Random(seed), n, {"min_ops": 4, "max_ops": 6})
    return [(task.format_prompt(p), task.solve(p)) for p in problems]


def solution_rows(task: Any, problem: Problem, k: int, rng: random.Random) -> list[tuple[str, str]]:
    """Up to ``k`` distinct solver solutions of a game24 puzzle, as (prompt, solution) rows."""
    return [(task.format_prompt(problem), solution) for solution in task.solutions(problem, k, rng)]


def game24_rows(task: Any, per_puzzle: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [row for p in task.problems("train") for row in solution_rows(task, p, per_puzzle, rng)]


def wide_rows(task: Any, n: int, largest: int, per_puzzle: int, seed: int) -> list[tuple[str, str]]:
    """``per_puzzle`` solver solutions of ``n`` random solvable puzzles with numbers up to ``largest``
    and at least one above 13. Every solvable 1-13 puzzle is in the Tree of Thoughts set, so these are
    new puzzles, never a dev or test one: the most a generator could add to the train split."""
    if not 13 < largest <= 99:
        raise SystemExit(f"--wide-max must lie in 14..99 (a number above 13), not {largest}")
    rng = random.Random(seed)
    tried: set[tuple[int, ...]] = set()  # each candidate goes to the solver once
    rows, kept, misses = [], 0, 0
    while kept < n:
        numbers = tuple(sorted(rng.randint(1, largest) for _ in range(4)))
        fresh = max(numbers) > 13 and numbers not in tried
        tried.add(numbers)
        if not fresh or solve_numbers(numbers) is None:
            misses += 1
            if misses > 100_000:  # there are fewer such puzzles than asked for
                raise SystemExit(f"found only {kept} of {n} puzzles with numbers up to {largest}")
            continue
        kept, misses = kept + 1, 0
        problem = Problem(f"game24-wide-{kept}", " ".join(map(str, numbers)))
        rows += solution_rows(task, problem, per_puzzle, rng)
    return rows


def measure(task: Task, model: Any, tokenizer: Any, problems: list[Problem]) -> dict[str, Any]:
    lm = TransformersLM(model, tokenizer)
    greedy = evaluate(task, lm, problems, method="greedy", batch_size=100)
    out: dict[str, Any] = {"greedy": greedy.metrics["accuracy"]}
    if task.name == "arith":
        by_ops: dict[int, list[bool]] = defaultdict(list)
        for problem, record in zip(problems, greedy.records):
            by_ops[sum(problem.question.count(op) for op in "+-*/")].append(bool(record.correct))
        out["greedy_by_ops"] = {k: sum(v) / len(v) for k, v in sorted(by_ops.items())}
    else:
        sampled = evaluate(task, lm, problems, method="sample", n=16, temperature=0.7, batch_size=100)
        out["pass@16"] = sampled.metrics["pass@16"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", choices=("arith", "game24"), required=True)
    parser.add_argument("--rows", type=int, nargs="+", default=[3000, 12000], help="arith: training rows")
    parser.add_argument("--per-puzzle", type=int, default=4, help="game24: solutions per train puzzle")
    parser.add_argument(
        "--wide-puzzles",
        type=int,
        default=0,
        metavar="N",
        help="game24: also --per-puzzle solutions of N solvable puzzles with numbers up to --wide-max",
    )
    parser.add_argument("--wide-max", type=int, default=24, help="game24: largest number of a wide puzzle")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--base", help="base model directory (default: the shipped <task>-base)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    task = get_task(args.task)
    base = args.base or f"{args.task}-base"
    problems = task.problems("dev")[:200] if args.task == "arith" else task.problems("test")
    model, tokenizer = load_causal_lm(base, dtype="float32")
    results: list[dict[str, Any]] = [
        {"data": "none (base)", "rows": 0, **measure(task, model, tokenizer, problems)}
    ]
    datasets = (
        [(f"{n} teacher solutions", arith_rows(task, n, args.seed)) for n in args.rows]
        if args.task == "arith"
        else [
            (
                f"{args.per_puzzle} solver solutions per train puzzle",
                game24_rows(task, args.per_puzzle, args.seed),
            )
        ]
    )
    if args.task == "game24" and args.wide_puzzles:
        name, rows = datasets[0]
        wide = wide_rows(task, args.wide_puzzles, args.wide_max, args.per_puzzle, args.seed)
        datasets = [(f"{name} + {args.wide_puzzles} puzzles to {args.wide_max}", rows + wide)]
    config = SFTConfig(epochs=args.epochs, lr=args.lr, batch_size=32, holdout=0.0, seed=args.seed)
    for name, rows in datasets:
        model, tokenizer = load_causal_lm(base, dtype="float32")
        started = time.perf_counter()
        sft(model, tokenizer, rows, config=config)
        seconds = round(time.perf_counter() - started, 1)
        results.append(
            {
                "data": name,
                "rows": len(rows),
                "sft_seconds": seconds,
                **measure(task, model, tokenizer, problems),
            }
        )
    split = "dev (first 200)" if args.task == "arith" else "test (ToT 901-1000)"
    print(f"\n{args.task}: SFT at lr {args.lr} for {args.epochs} epochs; greedy accuracy on {split}")
    for r in results:
        extra = r.get("greedy_by_ops") or {"pass@16": r.get("pass@16")}
        cells = "  ".join(f"{k}: {v:.2f}" for k, v in extra.items())
        print(f"  {r['data']:42s} rows {r['rows']:6d}  greedy {r['greedy']:.3f}  {cells}")
    append_result(args.out, f"sft_headroom-{args.task}.json", {"args": vars(args), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
