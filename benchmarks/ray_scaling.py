"""Problems per minute of eta-MCTS on Ray with 1 and 2 workers, against one plain process.

    python benchmarks/ray_scaling.py [--task arith] [--problems 48] [--simulations 8] [--workers 1 2]

Solves the problems in one plain process with one torch thread and with torch's default count (one per
core, what a search without Ray gets). Then starts a local Ray cluster with one CPU per worker (each
worker is an actor with its own model and one torch thread), solves the same problems with every worker
count, and checks that every run gives the same results as the one-thread process. Two rates per run:
end to end (actor start-up and model loading included) and steady (problems over the busiest worker's
search time). Prints a table and writes ``ray_scaling-TASK.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray
import torch

from alphallm.distributed import RayConfig, solve_on_ray
from alphallm.io import write_json
from alphallm.lm import load_lm
from alphallm.search import MCTSConfig
from alphallm.solve import SolveConfig, SolveReport, solve
from alphallm.tasks import get_task


def _rows(report: SolveReport) -> list[dict[str, Any]]:
    return [{k: v for k, v in asdict(r).items() if k != "tree"} for r in report.results]


def _busiest_worker_seconds(chunks: Path) -> float:
    """Search seconds of the worker that searched longest (start-up excluded)."""
    per_worker: dict[int, float] = {}
    for path in chunks.glob("chunk-*.json"):
        data = json.loads(path.read_text())
        per_worker[data["pid"]] = per_worker.get(data["pid"], 0.0) + data["seconds"]
    return max(per_worker.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="arith")
    parser.add_argument("--split", default="test", help="the task's split to draw the problems from")
    parser.add_argument("--problems", type=int, default=48)
    parser.add_argument("--simulations", type=int, default=8)
    parser.add_argument("--rollouts", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4, help="problems per batch (= per chunk)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    task = get_task(args.task)
    problems = task.problems(args.split)[: args.problems]
    model = f"{args.task}-base"
    config = SolveConfig(
        method="mcts",
        batch_size=args.batch_size,
        rollouts=args.rollouts,
        mcts=MCTSConfig(num_simulations=args.simulations),
        seed=args.seed,
    )

    runs: list[dict[str, Any]] = []
    reports: list[SolveReport] = []
    for threads in sorted({torch.get_num_threads(), 1}, reverse=True):  # the last, one core like a worker
        torch.set_num_threads(threads)
        started = time.perf_counter()
        reports.append(solve(task, problems, policy=load_lm(model, device="cpu"), config=config))
        seconds = time.perf_counter() - started
        runs.append(
            {
                "mode": f"one process, {threads} thread{'s' if threads > 1 else ''}",
                "workers": 1,
                "seconds": seconds,
                "problems_per_minute": 60 * len(problems) / seconds,
                "steady_problems_per_minute": 60 * len(problems) / reports[-1].wall_seconds,
            }
        )
    reference = reports[-1]  # the workers run one thread each, as this process did last
    for run, report in zip(runs, reports):
        run["same_results"] = _rows(report) == _rows(reference)
    ray.init(num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False)
    try:
        for workers in args.workers:
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                report = solve_on_ray(
                    task,
                    problems,
                    model=model,
                    config=config,
                    ray_config=RayConfig(enabled=True, workers=workers),
                    out_dir=tmp,
                    device="cpu",
                )
                seconds = time.perf_counter() - started
                busiest = _busiest_worker_seconds(Path(tmp))
            runs.append(
                {
                    "mode": "Ray",
                    "workers": workers,
                    "seconds": seconds,
                    "problems_per_minute": 60 * len(problems) / seconds,
                    "steady_problems_per_minute": 60 * len(problems) / busiest,
                    "same_results": _rows(report) == _rows(reference),
                }
            )
    finally:
        ray.shutdown()

    print(
        f"{len(problems)} {args.task} {args.split} problems, eta-MCTS with {args.simulations} simulations "
        f"and {args.rollouts} rollout(s), batches (= chunks) of {args.batch_size}; 'same': the results of "
        "the one-thread process"
    )
    header = (
        f"{'mode':22s} {'workers':>7s} {'seconds':>8s} {'problems/min':>13s} {'steady/min':>11s} {'same':>5s}"
    )
    print(header)
    for run in runs:
        print(
            f"{run['mode']:22s} {run['workers']:7d} {run['seconds']:8.1f} {run['problems_per_minute']:13.1f} "
            f"{run['steady_problems_per_minute']:11.1f} {'yes' if run['same_results'] else 'NO':>5s}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"args": vars(args), "accuracy": reference.accuracy, "runs": runs}
    path = out / f"ray_scaling-{args.task}.json"
    write_json(path, record)
    print(f"\nwrote {path}")
    return 0 if all(run["same_results"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
