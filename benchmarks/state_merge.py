"""State merge in eta-MCTS: off, resample (the AlphaLLM code) and merge-into-twin, at equal simulations.

    python benchmarks/state_merge.py [--tasks arith game24] [--limit 100]

Each task's search config (``configs/search/<task>.yaml``, tool verifier, shipped base model) with
``mcts.merge`` set to each mode; everything else, the seed included, is equal. Prints a table and
writes ``state_merge.json``. A finished run's result file under ``--work`` is reused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from alphallm.cli import main as alphallm
from alphallm.search.config import MERGE_MODES

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "search"


def run(task: str, mode: str, limit: int, work: Path) -> dict[str, Any]:
    result = work / f"{task}-{mode}.json"
    if not result.exists():
        config = yaml.safe_load((CONFIGS / f"{task}.yaml").read_text())
        config["mcts"] = {**config.get("mcts", {}), "merge": mode}
        path = work / f"{task}-{mode}.yaml"
        path.write_text(yaml.safe_dump(config))
        args = ["search", "--task", task, "--limit", str(limit), "--config", str(path), "--out", str(result)]
        print("$ alphallm " + " ".join(args), flush=True)
        if alphallm(args) != 0:
            raise SystemExit(f"search {task} {mode} failed")
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
    parser.add_argument("--work", default="runs/bench-merge")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    results = {task: {mode: run(task, mode, args.limit, work) for mode in MERGE_MODES} for task in args.tasks}
    out.mkdir(parents=True, exist_ok=True)
    (out / "state_merge.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print(f"\n{'task':8s} {'merge':9s} {'accuracy':>8s} {'tokens':>7s} {'nodes':>6s}")
    for task, modes in results.items():
        for mode, r in modes.items():
            cells = f"{r['accuracy']:8.2f} {r['tokens_per_problem']:7.0f} {r['mean_nodes']:6.1f}"
            print(f"{task:8s} {mode:9s} {cells}")
    print(f"\nwrote {out / 'state_merge.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
