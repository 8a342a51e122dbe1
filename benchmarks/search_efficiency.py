"""Accuracy against generated tokens for every search method at several budgets.

    python benchmarks/search_efficiency.py [--tasks arith game24] [--limit 100] [--out benchmarks/results]

Every method runs in the same harness (the same backend, critics and accounting) on the shipped
base models. Tokens are all generated tokens: the policy's and the rollout policy's. Prints a
table, writes ``search_efficiency.json`` and ``search_efficiency.png``. Points measured again replace
their rows in the JSON and the others stay, so ``--tasks game24 --methods mcts-no-rollouts`` adds one
line to the existing figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from alphallm.io import write_json
from alphallm.lm import load_lm
from alphallm.solve import SolveConfig, solve
from alphallm.tasks import get_task

# Budgets per method: what "more compute" means for each.
GRID: dict[str, list[dict[str, Any]]] = {
    "greedy": [{}],
    "sc": [{"samples": k} for k in (4, 8, 16, 32, 64)],
    "bon": [{"samples": k} for k in (4, 8, 16, 32, 64)],
    "beam": [{"beam_width": w, "expansions": 3} for w in (1, 2, 4, 8)],
    "bfs": [{"bfs_budget": k, "expansions": 3} for k in (4, 8, 16, 32)],
    "mcts": [{"mcts": {"num_simulations": k}} for k in (8, 16, 32, 64)],
    # eta-MCTS without fast rollouts: leaves are judged by the critics alone (for game24, the
    # reachability verifier), so a simulation costs one option instead of an option plus two
    # completions. Skipped for a task whose config has no rollouts (it is the line above).
    "mcts-no-rollouts": [
        {"method": "mcts", "rollouts": 0, "mcts": {"num_simulations": k}} for k in (16, 32, 64, 128)
    ],
}


def base_settings(task_name: str) -> dict[str, Any]:
    """The task's search settings from configs/search/<task>.yaml (shared by every method)."""
    path = Path(__file__).resolve().parents[1] / "configs" / "search" / f"{task_name}.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def run_point(
    task_name: str, method: str, budget: dict[str, Any], problems: list[Any], policy: Any, seed: int
) -> dict:
    data = base_settings(task_name)
    data["mcts"] = {**(data.get("mcts") or {}), **budget.pop("mcts", {})}
    solver = budget.pop("method", method)  # a grid line may be a variant of another method
    config = SolveConfig.from_dict({**data, **budget, "method": solver, "seed": seed})
    mcts = config.mcts
    report = solve(get_task(task_name), problems, policy=policy, config=config)
    summary = report.summary()
    return {
        "task": task_name,
        "method": method,
        "budget": {**budget, **({"num_simulations": mcts.num_simulations} if solver == "mcts" else {})},
        "accuracy": summary["accuracy"],
        "generated_tokens": summary["generated_tokens"],
        "tokens_per_problem": summary["generated_tokens"] / max(1, len(problems)),
        "prefill_tokens": summary["prefill_tokens"],
        "wall_seconds": summary["wall_seconds"],
        "usage": summary["usage"],
    }


def _key(row: dict) -> tuple[str, str, str]:
    return (row["task"], row["method"], json.dumps(row["budget"], sort_keys=True))


def merge(kept: list[dict], fresh: list[dict]) -> list[dict]:
    """``kept`` with the points measured again replaced: a run of some methods or tasks updates the
    file instead of dropping the others' rows."""
    done = {_key(r) for r in fresh}
    return [r for r in kept if _key(r) not in done] + fresh


def redundant(task_name: str, method: str) -> bool:
    """The no-rollouts line of a task that has no rollouts anyway."""
    return method == "mcts-no-rollouts" and not base_settings(task_name).get("rollouts")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for method in GRID:
            points = sorted(
                (r["tokens_per_problem"], r["accuracy"])
                for r in rows
                if r["task"] == task and r["method"] == method
            )
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", label=method)
        ax.set_xscale("log")
        ax.set_xlabel("generated tokens per problem (policy + rollouts)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{task}: accuracy vs compute")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=["arith", "game24"])
    parser.add_argument("--methods", nargs="+", default=list(GRID), choices=list(GRID))
    parser.add_argument("--limit", type=int, default=100, help="test problems per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "search_efficiency.json"
    kept = json.loads(path.read_text()) if path.exists() else []
    rows: list[dict] = []
    for task_name in args.tasks:
        task = get_task(task_name)
        problems = task.problems("test")[: args.limit]
        policy = load_lm(f"{task_name}-base")
        for method in (m for m in args.methods if not redundant(task_name, m)):
            for budget in GRID[method]:
                started = time.perf_counter()
                row = run_point(task_name, method, dict(budget), problems, policy, args.seed)
                rows.append(row)
                seconds = time.perf_counter() - started
                print(
                    f"{task_name:7s} {method:6s} {json.dumps(row['budget']):32s} acc={row['accuracy']:.3f} "
                    f"tokens/problem={row['tokens_per_problem']:8.0f} ({seconds:.0f} s)",
                    flush=True,
                )
                write_json(path, merge(kept, rows))
    plot(merge(kept, rows), out / "search_efficiency.png")
    print(f"\nwrote {out / 'search_efficiency.json'} and {out / 'search_efficiency.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
