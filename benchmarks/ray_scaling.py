"""Problems per minute of eta-MCTS on Ray with 1 and 2 workers, against one plain process.

    python benchmarks/ray_scaling.py [--task arith] [--problems 48] [--simulations 8] [--workers 1 2]

Starts a local Ray cluster with one CPU per worker (each worker is an actor with its own model and
one torch thread), solves the same problems with every worker count, and checks that every run
gives the same results as the single process. Two rates per run: end to end (actor start-up and
model loading included) and steady (problems over the busiest worker's search time). Prints a
table and writes ``ray_scaling.json``.
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
    parser.add_argument("--problems", type=int, default=48)
    parser.add_argument("--simulations", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4, help="problems per batch (= per chunk)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    task = get_task(args.task)
    problems = task.problems("test")[: args.problems]
    model = f"{args.task}-base"
    config = SolveConfig(
        method="mcts",
        batch_size=args.batch_size,
        rollouts=1,
        mcts=MCTSConfig(num_simulations=args.simulations),
        seed=args.seed,
    )

    torch.set_num_threads(1)  # one core, like each worker
    started = time.perf_counter()
    reference = solve(task, problems, policy=load_lm(model, device="cpu"), config=config)
    single_seconds = time.perf_counter() - started
    runs: list[dict[str, Any]] = [
        {
            "mode": "one process (no Ray)",
            "workers": 1,
            "seconds": single_seconds,
            "problems_per_minute": 60 * len(problems) / single_seconds,
            "steady_problems_per_minute": 60 * len(problems) / reference.wall_seconds,
            "same_results": True,
        }
    ]
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
        f"{len(problems)} {args.task} problems, eta-MCTS with {args.simulations} simulations, "
        f"batches (= chunks) of {args.batch_size}"
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
    write_json(out / "ray_scaling.json", record)
    print(f"\nwrote {out / 'ray_scaling.json'}")
    return 0 if all(run["same_results"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
