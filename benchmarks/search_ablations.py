"""eta-MCTS with one part switched off at a time, at equal simulations (AlphaLLM's ablations, in search).

    python benchmarks/search_ablations.py [--tasks arith game24] [--limit 100] [--critics runs/bench-critics]

Each task's search config (``configs/search/<task>.yaml``: the tool verifier, the shipped base model)
against the same config with one change; everything else, the seed included, is equal:

    eta-MCTS                 the config as it is
    no adaptive branching    every node gets ``fixed_width`` = 3 children (no importance-based widening)
    state merge off          a sampled option as close as a sibling to it is kept as it is
    merge into twin          ... or joins its twin's statistics instead of being re-sampled
    drop exact twins         ... or, still a word-for-word copy after the re-samples, is dropped and
                             its node closed (``mcts.drop_twins``; the default keeps the twin)
    no fast rollouts         node values without rollouts (tasks whose config has rollouts)
    legality only            the tool verifier checks moves, not whether the state can still be
                             solved (tasks with such a check: game24)

With ``--critics DIR`` (the critics benchmark's work directory, with ``<task>-{value,prm,orm}[-confidence]``
critics), more rows search with the learned critics and no verifier: all three, without the PRM, and
all three dropping exact twins. ``--rows`` runs only the named rows. Prints a table and writes
``search_ablations.json``; a finished run's result under ``--work`` is reused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from alphallm.cli import main as alphallm
from alphallm.io import write_json, write_text
from alphallm.tasks import get_task
from alphallm.tasks.base import Task

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "search"

ABLATIONS: dict[str, dict[str, Any]] = {
    "eta-MCTS": {},
    "no adaptive branching": {"mcts": {"adaptive_branching": False, "fixed_width": 3}},
    "state merge off": {"mcts": {"merge": "off"}},
    "merge into twin": {"mcts": {"merge": "merge"}},
    "drop exact twins": {"mcts": {"drop_twins": True}},
    "no fast rollouts": {"rollouts": 0},
    "legality only (no reachability)": {"reachability": False},
}
LEARNED = {
    "learned critics": {"weights": {"value": 1.0, "prm": 1.0, "orm": 1.0, "rollout": 1.0}, "prune": False},
    "learned critics, no PRM": {"weights": {"value": 1.0, "orm": 1.0, "rollout": 1.0}, "prune": False},
    "learned critics, drop exact twins": {
        "weights": {"value": 1.0, "prm": 1.0, "orm": 1.0, "rollout": 1.0},
        "prune": False,
        "mcts": {"drop_twins": True},
    },
}


def _critic_dir(critics: Path, task: str, kind: str) -> Path | None:
    for suffix in ("-confidence", ""):
        path = critics / f"{task}-{kind}{suffix}"
        if (path / "critic.json").is_file():
            return path
    return None


def run(task: str, name: str, patch: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    slug = name.replace(" ", "-").replace(",", "").replace("(", "").replace(")", "")
    result = work / f"{task}-{slug}.json"
    if not result.exists():
        config = yaml.safe_load((CONFIGS / f"{task}.yaml").read_text())
        config = {**config, **patch, "mcts": {**config.get("mcts", {}), **patch.get("mcts", {})}}
        path = work / f"{task}-{slug}.yaml"
        write_text(path, yaml.safe_dump(config))
        flags = []
        for kind in patch.get("weights", {}):
            found = _critic_dir(Path(args.critics), task, kind) if kind in ("value", "prm", "orm") else None
            if found is not None:
                flags += ["--critic", f"{kind}={found}"]
        cmd = ["search", "--task", task, "--limit", str(args.limit), "--config", str(path), *flags]
        cmd += ["--out", str(result)]
        print("$ alphallm " + " ".join(cmd), flush=True)
        if alphallm(cmd) != 0:
            raise SystemExit(f"search {task} {name} failed")
    data = json.loads(result.read_text())
    return {
        "accuracy": data["accuracy"],
        "tokens_per_problem": data["generated_tokens"] / data["problems"],
        "mean_nodes": data["mean_nodes"],
        "wall_seconds": data["wall_seconds"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=["arith", "game24"])
    parser.add_argument("--limit", type=int, default=100, help="test problems per task")
    parser.add_argument("--critics", help="the critics benchmark's work directory (adds learned-critic rows)")
    parser.add_argument("--rows", nargs="+", help="only these rows (names as in the table)")
    parser.add_argument("--work", default="runs/bench-ablations")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for task in args.tasks:
        config = yaml.safe_load((CONFIGS / f"{task}.yaml").read_text())
        rows = dict(ABLATIONS)
        if not config.get("rollouts", 2):
            rows.pop("no fast rollouts")  # nothing to switch off
        if type(get_task(task)).solvable_after is Task.solvable_after:
            rows.pop("legality only (no reachability)")  # the task has no state check
        if args.critics and all(_critic_dir(Path(args.critics), task, k) for k in ("value", "prm", "orm")):
            rows.update(LEARNED)
        if args.rows:
            unknown = sorted(set(args.rows) - set(ABLATIONS) - set(LEARNED))
            if unknown:
                raise SystemExit(f"unknown row(s): {', '.join(unknown)}")
            rows = {name: patch for name, patch in rows.items() if name in args.rows}
        results[task] = {name: run(task, name, patch, args, work) for name, patch in rows.items()}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "search_ablations.json", {"args": vars(args), "results": results})
    print(f"\n{'task':8s} {'search':34s} {'accuracy':>8s} {'tokens':>7s} {'nodes':>6s}")
    for task, rows_ in results.items():
        for name, r in rows_.items():
            cells = f"{r['accuracy']:8.2f} {r['tokens_per_problem']:7.0f} {r['mean_nodes']:6.1f}"
            print(f"{task:8s} {name:34s} {cells}")
    print(f"\nwrote {out / 'search_ablations.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
