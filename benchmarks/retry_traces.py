"""Can game24's greedy policy pass 0.40 if it may retry in its own output (Stream of Search style)?

The loop's greedy policy must plan four numbers in one pass: most of its greedy failures make 24
unreachable at the first move (``sft_sweep``), and no SFT data or recipe lifted it past 0.34-0.39
(``sft_headroom``). Here the policy may give up on an attempt and start again in the same output:

    Input: 2 5 8 11
    8*2=16 (left: 5 11 16)
    11-5=6 (left: 6 16)
    back
    11-5=6 (left: 2 6 8)
    8/2=4 (left: 4 6)
    6*4=24 (left: 24)
    Answer: (11-5)*8/2=24

Training traces are built from a finished loop run: each puzzle's verified solution is preceded by
0-3 failed attempts, each one the run's policy's own sampled first two moves that leave two numbers
which cannot make 24 (the task's reachability check, the tool the training search uses), then a line
``back``. The successful attempt starts with another first move. ``--source loop`` takes the solutions
from the run's own SFT rows (what its searches verified; no oracle); ``--source solver`` from the task's
solver (an oracle, as ``sft_headroom``). The policy is fine-tuned on the traces and decoded greedily on
the Tree of Thoughts test puzzles; a puzzle is solved when the attempt after the last ``back`` is a
valid solution under the task's strict check (``Game24Task.check`` reads ``back`` lines, and every
attempt's moves must be legal; ``alphallm eval --max-tokens 400`` scores a saved policy the same way).
Tokens per puzzle are reported beside accuracy: retrying costs tokens.

    python benchmarks/retry_traces.py --run runs/bench-improve-49839c0/game24-sft_only --round 6 --source loop

Prints a table and writes ``retry_traces.json`` (one entry per run).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _sweep import append_result

from alphallm.evaluation import evaluate
from alphallm.lm.hf import TransformersLM
from alphallm.lm.loading import load_causal_lm, save_causal_lm
from alphallm.report.stats import paired_change
from alphallm.tasks import get_task
from alphallm.tasks.base import Problem
from alphallm.tasks.game24 import RETRY_LINE
from alphallm.train.retry import failed_attempts
from alphallm.train.sft import SFTConfig, sft

BACK = RETRY_LINE + "\n"
TASK: Any = get_task("game24")


def loop_solutions(run: Path, rounds: int) -> dict[str, list[str]]:
    """Puzzle -> the distinct verified solutions of the run's rounds 1..``rounds`` (their SFT rows)."""
    out: dict[str, list[str]] = {}
    for k in range(1, rounds + 1):
        for prompt, solution in json.loads((run / f"round-{k}" / "data.json").read_text())["sft"]:
            question = prompt.removeprefix("Input: ").strip()
            if solution not in out.setdefault(question, []):
                out[question].append(solution)
    return out


def solver_solutions(problems: list[Problem], k: int, rng: random.Random) -> dict[str, list[str]]:
    return {p.question: TASK.solutions(p, k, rng) for p in problems}


def traces(
    solutions: dict[str, list[str]], fails: dict[str, list[str]], per_puzzle: int, rng: random.Random
) -> list[tuple[str, str]]:
    """``per_puzzle`` (prompt, trace) rows a puzzle: 0-3 failed attempts (keyed by prompt), then a
    solution that does not start like any of them. (The loop's ``learn.retry_mix`` writes one trace per
    SFT row instead: ``alphallm.train.retry.retry_rows``.)"""
    rows = []
    for question, solved in solutions.items():
        prompt = TASK.format_prompt(Problem("q", question))
        for _ in range(per_puzzle):
            k = rng.choices([0, 1, 2, 3], weights=[0.35, 0.3, 0.2, 0.15])[0]
            tried = rng.sample(fails.get(prompt, []), min(k, len(fails.get(prompt, []))))
            firsts = {attempt.split("\n")[0] for attempt in tried}
            fresh = [s for s in solved if s.split("\n")[0] not in firsts]
            if fresh:
                rows.append((prompt, "".join(attempt + BACK for attempt in tried) + rng.choice(fresh)))
    return rows


def first_steps(solution: str) -> list[str]:
    """The first step of each attempt of a decoded solution."""
    return [part.split("\n", 1)[0] for part in solution.split(BACK) if part.strip()]


def measure(model: Any, tokenizer: Any, problems: list[Problem], max_tokens: int) -> dict[str, Any]:
    """Greedy decoding scored by the task's check, which reads ``back`` lines (as ``alphallm eval
    --max-tokens`` does). ``repeating``: solutions that start an attempt like one they abandoned."""
    result = evaluate(TASK, TransformersLM(model, tokenizer), problems, max_tokens=max_tokens, batch_size=100)
    records = result.records
    firsts = [first_steps(r.solution) for r in records]
    return {
        "greedy": result.metrics["accuracy"],
        "legal_step_rate": result.metrics.get("legal_step_rate"),
        "tokens_per_puzzle": sum(r.tokens for r in records) / len(records),
        "backs_per_puzzle": sum(r.solution.count(BACK) for r in records) / len(records),
        "hit_max_tokens": sum(r.tokens >= max_tokens for r in records),
        "unanswered": sum(r.answer is None for r in records),
        "repeating": sum(len(set(f)) < len(f) for f in firsts),
        "solved": {r.problem_id: int(bool(r.correct)) for r in records},
        "examples": [r.solution for r in records[:3]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="a finished game24 loop run directory")
    parser.add_argument("--round", type=int, required=True, help="its round whose kept policy retries")
    parser.add_argument(
        "--source", choices=("loop", "solver"), default="loop", help="where solutions come from"
    )
    parser.add_argument("--per-puzzle", type=int, default=4, help="traces per puzzle")
    parser.add_argument(
        "--samples", type=int, default=8, help="policy samples per puzzle for failed attempts"
    )
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-tokens", type=int, default=400, help="greedy decoding budget per puzzle")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--save", help="directory to save the fine-tuned policy in (for alphallm eval/search)"
    )
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    run = Path(args.run)
    policy = json.loads((run / "metrics.jsonl").read_text().splitlines()[args.round])["policy"]
    torch.manual_seed(args.seed)
    model, tokenizer = load_causal_lm(str(run / policy), dtype="float32")
    test = TASK.problems("test")
    started = time.perf_counter()
    if args.source == "loop":
        solutions = loop_solutions(run, args.round)
    else:
        solutions = solver_solutions(TASK.problems("train"), 3 * args.per_puzzle, random.Random(args.seed))
    puzzles = [Problem(f"q{i}", q) for i, q in enumerate(solutions)]
    prompts = [TASK.format_prompt(p) for p in puzzles]
    fails = failed_attempts(
        TASK, TransformersLM(model, tokenizer), prompts, samples=args.samples, seed=args.seed
    )
    rows = traces(solutions, fails, args.per_puzzle, random.Random(args.seed))
    data_seconds = time.perf_counter() - started
    before = measure(model, tokenizer, test, args.max_tokens)
    started = time.perf_counter()
    sft(model, tokenizer, rows, config=SFTConfig(epochs=args.epochs, lr=args.lr, holdout=0.0, seed=args.seed))
    sft_seconds = time.perf_counter() - started
    after = measure(model, tokenizer, test, args.max_tokens)
    if args.save:
        save_causal_lm(model, tokenizer, args.save)
    change = paired_change(before["solved"], after["solved"])
    result = {
        "args": vars(args),
        "policy": policy,
        "puzzles": len(solutions),
        "failed_attempts": sum(map(len, fails.values())),
        "rows": len(rows),
        "rows_with_a_retry": sum(BACK in trace for _, trace in rows),
        "data_seconds": round(data_seconds, 1),
        "sft_seconds": round(sft_seconds, 1),
        "before": before,
        "after": after,
        "change": change,
    }
    print(
        f"\ngame24, {run.name} round {args.round}, {len(rows)} traces ({args.source} solutions),"
        f" {len(test)} test puzzles"
    )
    print(f"  {'policy':34s} greedy  tokens/puzzle  backs/puzzle  hit {args.max_tokens} tokens")
    for name, r in ((f"round {args.round} policy", before), ("+ SFT on retry traces", after)):
        print(
            f"  {name:34s} {r['greedy']:.2f}    {r['tokens_per_puzzle']:7.1f}       "
            f"{r['backs_per_puzzle']:.2f}          {r['hit_max_tokens']}"
        )
    print(f"  change {change['change']:+.2f} ± {change['se']:.3f} (z {change['z']:+.1f})")
    append_result(args.out, "retry_traces.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
