"""What moves greedy accuracy: one finished loop round's SFT stage, re-run with other rows and recipes.

    python benchmarks/sft_sweep.py --run runs/bench-improve/game24-small-full-d45d7a5 --round 5 --seeds 2

Re-runs round k's SFT stage as the loop did (the rows of rounds 1..k, replayed and deduplicated, from
the policy kept after round k-1, or from the run's starting policy with ``learn.sft_from: start``, with
the round's SFT settings and seed) and with one change at a time:

    loop            the stage as it ran (the first seed, the round's own, reproduces its ``sft`` model)
    consistent      the same rows less those the task's verifier now rejects (game24 since b82fd39:
                    an answer that makes 24 after moves that went elsewhere)
    4 per problem   up to 4 verified solutions per problem from the rounds' trees, consistent ones
    every solution  every distinct verified, consistent solution in the rounds' trees
    lr 1e-3 x 6     consistent rows, lr 1e-3, 6 epochs
    from start      consistent rows from the run's starting policy, lr 1e-3, 10 epochs

``--with-run OTHER`` adds a variant: the loop's rows together with another run's rows of rounds 1..k
(deduplicated), e.g. a rejection-sampling run on the same problems (``self_improvement.py --variants rest``).

``--seeds S`` trains each variant with S shuffling seeds (the round's seed, then +1, ...): a single
round's retrain moves by several points with the seed alone. Each candidate is scored greedy on the
run's dev problems (the gate's set) and test problems, paired against ``loop`` at the round's seed.
``--search N`` also runs the loop's test-time eta-MCTS (the run's ``evaluate.search`` settings and
seed, the task's verifier) on the first N test problems, as the round's evaluate stage does with
``evaluate.search_problems``: how far the seed alone moves the search a round hands on.
Prints a table and writes ``sft_sweep-<run>-round<k>.json``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from _sweep import finished_round, sweep_parser

from alphallm.evaluation import evaluate
from alphallm.io import write_json
from alphallm.lm import load_lm
from alphallm.lm.loading import load_causal_lm, save_causal_lm
from alphallm.loop import Loop
from alphallm.loop_solve import evaluation_searches, solve_with, solved_by_problem
from alphallm.report.stats import paired_change
from alphallm.train.data import sft_rows
from alphallm.train.sft import sft

Row = tuple[str, str]
VARIANTS: dict[str, dict[str, Any]] = {  # rows: "loop", "consistent" or per problem; start; SFTConfig
    "loop": {"rows": "loop"},
    "consistent": {"rows": "consistent"},
    "4 per problem": {"rows": 4},
    "every solution": {"rows": 10**6},
    "lr 1e-3 x 6": {"rows": "consistent", "sft": {"lr": 1e-3, "epochs": 6}},
    "from start": {"rows": "consistent", "start": "start", "sft": {"lr": 1e-3, "epochs": 10}},
}


def consistent(loop: Loop, rows: list[Row]) -> list[Row]:
    """The rows the task's verifier does not now reject. A prompt keeps no gold answer, so a task that
    needs one (arith) cannot re-check and keeps every row: they were verified when they were made."""
    task = loop.task
    problems = {prompt: task.problem_from_prompt(prompt) for prompt, _ in rows}
    return [
        (prompt, s)
        for prompt, s in rows
        if (p := problems[prompt]) is not None and task.check(p, s) is not False
    ]


def tree_rows(loop: Loop, k: int, per_problem: int) -> list[Row]:
    """Up to ``per_problem`` solutions per problem and round, best-scored first, that verify now."""
    rows: list[Row] = []
    for j in range(1, k + 1):
        counts: dict[str, int] = {}
        for prompt, solution in consistent(loop, sft_rows(loop.trees(range(j, j + 1)), per_problem=10**6)):
            if counts.get(prompt, 0) < per_problem:
                counts[prompt] = counts.get(prompt, 0) + 1
                rows.append((prompt, solution))
    return list(dict.fromkeys(rows))


def train(
    loop: Loop, k: int, rows: list[Row], variant: dict[str, Any], seed: int, out: Path
) -> dict[str, Any]:
    from_start = variant.get("start") == "start" or loop.config.learn.sft_from == "start"
    start = loop.config.policy if from_start else loop.policy(k - 1)
    config = replace(loop.config.learn.sft, **variant.get("sft", {}), seed=seed)
    model, tokenizer = load_causal_lm(start, dtype="float32")
    started = time.perf_counter()
    sft(model, tokenizer, rows, config=config)
    save_causal_lm(model, tokenizer, out)
    return {
        "seconds": time.perf_counter() - started,
        "lr": config.lr,
        "epochs": config.epochs,
        "start": start,
    }


def greedy(loop: Loop, policy: Path, split: str, limit: int) -> dict[str, Any]:
    problems = loop.task.problems(split)[:limit]
    report = evaluate(loop.task, load_lm(str(policy)), problems, method="greedy")
    return {
        "accuracy": report.metrics["accuracy"],
        "solved": solved_by_problem(report.records),
    }


def search(loop: Loop, policy: Path, limit: int) -> dict[str, Any]:
    """The evaluate stage's eta-MCTS with the task's verifier (same settings and seed)."""
    config = evaluation_searches(loop.config.evaluate, {}, loop.config.seed)["mcts"]
    report = solve_with(loop.task, loop.task.problems("test")[:limit], policy=str(policy), config=config)
    return {
        "accuracy": report.accuracy,
        "generated_tokens": report.generated_tokens,
        "solved": solved_by_problem(report.results),
    }


def main(argv: list[str] | None = None) -> int:
    parser = sweep_parser(__doc__, VARIANTS)
    parser.add_argument("--seeds", type=int, default=1, help="shuffling seeds per variant")
    parser.add_argument(
        "--search", type=int, default=0, metavar="N", help="also eta-MCTS on the first N test problems"
    )
    parser.add_argument(
        "--with-run", metavar="OTHER", help="also train on the loop's rows plus OTHER's rows of rounds 1..k"
    )
    args = parser.parse_args(argv)
    run, k = Path(args.run), args.round
    loop = finished_round(run, k)
    settings = loop.config.evaluate
    base = loop.sft_rows(k)
    data = {"loop": base, "consistent": consistent(loop, base)}
    variants = {name: VARIANTS[name] for name in args.variants}
    if args.with_run:
        other = Path(args.with_run)
        data["with"] = list(dict.fromkeys(base + finished_round(other, k).sft_rows(k)))
        variants[f"loop + {other.name}"] = {"rows": "with"}
    results: list[dict[str, Any]] = []
    for name, variant in variants.items():
        kind = variant["rows"]
        rows = data[kind] if isinstance(kind, str) else tree_rows(loop, k, kind)
        for i in range(args.seeds):
            seed = loop.seed(k, "sft") + i
            with tempfile.TemporaryDirectory() as tmp:
                record = {"variant": name, "seed": seed, "rows": len(rows)}
                record |= train(loop, k, rows, variant, seed, Path(tmp))
                record["dev"] = greedy(loop, Path(tmp), "dev", settings.dev_problems)
                record["test"] = greedy(loop, Path(tmp), "test", settings.test_problems)
                if args.search:
                    record["search"] = search(loop, Path(tmp), args.search)
            results.append(record)
            print(
                f"{name} seed {seed}: {len(rows)} rows, dev {record['dev']['accuracy']:.2f}, "
                f"test {record['test']['accuracy']:.2f}"
                + (f", eta-MCTS {record['search']['accuracy']:.2f}" if args.search else ""),
                flush=True,
            )
    reference = next(
        (r for r in results if r["variant"] == "loop" and r["seed"] == loop.seed(k, "sft")), None
    )
    scored = f"greedy on dev {settings.dev_problems} and test {settings.test_problems}"
    scored += f", eta-MCTS on test {args.search}" if args.search else ""
    print(f"\n{run.name} round {k} ({scored})")
    columns = ["SFT variant", "seed", "rows", "dev", "test", "test against loop (z)"]
    columns += ["eta-MCTS", "eta-MCTS against loop (z)"] if args.search else []
    print("| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|")
    for r in results:
        cells = [r["variant"], r["seed"], r["rows"], f"{r['dev']['accuracy']:.2f}"]
        for metric in ("test", "search") if args.search else ("test",):
            change = "-"
            if reference is not None and r is not reference:
                c = paired_change(reference[metric]["solved"], r[metric]["solved"])
                r[f"{metric}_change"] = c
                change = f"{c['change']:+.2f} ({c['z']:+.1f})"
            cells += [f"{r[metric]['accuracy']:.2f}", change]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    out = Path(args.out) / f"sft_sweep-{run.name}-round{k}.json"
    write_json(out, {"run": str(run), "round": k, "results": results})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
