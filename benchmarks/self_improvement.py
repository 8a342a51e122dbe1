"""Self-improvement across rounds: the full loop, its ablations, and rejection-sampling self-training.

    python benchmarks/self_improvement.py --tasks arith game24 --variants full rest [--rounds 5] [--small]

Each variant is the task's config in ``configs/improve/<task>.yaml`` (``<task>-small.yaml`` with
``--small``: the sizes a 2-core CPU affords in an hour or two) with a patch:

    full            eta-MCTS search, critics refreshed every round, SFT + step-DPO
    frozen_critics  critics trained in round 1, then frozen (as in AlphaLLM)
    sft_only        no DPO
    no_ab           no adaptive branching (fixed width 2)
    no_merge        no state merge
    no_rollouts     no fast rollouts in training-time search
    no_prm          value and ORM critics only
    rest            rejection-sampling self-training (STaR / ReST-EM): sample N solutions per
                    problem, keep the verified ones, SFT; N is set so a round generates about as many
                    tokens as the full loop's search (measured from its round 1)

Runs go to ``runs/bench-improve/<task>[-small]-<variant>`` (resumable: re-running continues them).
Prints a table per task, writes ``self_improvement[-small].json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from alphallm.cli import main as alphallm

ROOT = Path(__file__).resolve().parents[1]

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "frozen_critics": {"critics": {"refresh": False}},
    "sft_only": {"learn": {"use_dpo": False}},
    "no_ab": {"search": {"mcts": {"adaptive_branching": False, "fixed_width": 2}}},
    "no_merge": {"search": {"mcts": {"merge": "off"}}},
    "no_rollouts": {"search": {"rollouts": 0}},
    "no_prm": {"critics": {"kinds": ["value", "orm"]}},
    "rest": {
        "search": {"method": "bon", "temperature": 0.7},
        "learn": {"use_dpo": False},
        "critics": {"kinds": []},
    },
}


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        out[key] = _merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def _rest_samples(prefix: str, work: Path) -> int:
    """Samples per problem that match the full loop's round-1 search tokens (greedy-sized chains)."""
    full = work / f"{prefix}-full"
    search = json.loads((full / "round-1" / "search.json").read_text())
    evaluation = json.loads((full / "round-0" / "eval.json").read_text())
    per_problem = search["generated_tokens"] / max(1, search["problems"])
    return max(2, round(per_problem / max(1.0, evaluation["greedy"]["tokens_per_problem"])))


def run_variant(task: str, variant: str, rounds: int, work: Path, small: bool) -> list[dict[str, Any]]:
    prefix = f"{task}-small" if small else task
    base = yaml.safe_load((ROOT / "configs" / "improve" / f"{prefix}.yaml").read_text())
    config = _merge(base, VARIANTS[variant])
    config.update(name=f"{prefix}-{variant}", out_dir=str(work), rounds=rounds)
    if variant == "rest":
        config["search"]["samples"] = _rest_samples(prefix, work)
    path = work / f"{prefix}-{variant}.yaml"
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    run_dir = work / f"{prefix}-{variant}"
    args = ["improve", "--config", str(path)] + (["--resume"] if run_dir.exists() else [])
    print("$ alphallm " + " ".join(args), flush=True)
    if alphallm(args) != 0:
        raise SystemExit(f"{prefix}-{variant} failed")
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def plot(results: dict[str, dict[str, list[dict[str, Any]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(6 * len(results), 8), squeeze=False)
    for column, (task, variants) in enumerate(results.items()):
        for row, method in enumerate(("greedy", "mcts")):
            ax = axes[row][column]
            for variant, metrics in variants.items():
                ax.plot(
                    [m["round"] for m in metrics],
                    [m[method]["accuracy"] for m in metrics],
                    marker="o",
                    label=variant,
                )
            ax.set_title(f"{task}: {method} accuracy (test)")
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=["arith", "game24"])
    parser.add_argument("--variants", nargs="+", default=["full", "rest"], choices=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--small", action="store_true", help="the reduced configs (configs/improve/<task>-small.yaml)"
    )
    parser.add_argument("--work", default="runs/bench-improve")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    work = Path(args.work)
    variants = (
        ["full", *[v for v in args.variants if v != "full"]] if "rest" in args.variants else args.variants
    )
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for task in args.tasks:
        results[task] = {
            variant: run_variant(task, variant, args.rounds, work, args.small) for variant in variants
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "self_improvement-small" if args.small else "self_improvement"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2))
    plot(results, out / f"{stem}.png")
    for task, by_variant in results.items():
        print(f"\n{task}: test accuracy per round (greedy / eta-MCTS)")
        for variant, metrics in by_variant.items():
            cells = "  ".join(f"{m['greedy']['accuracy']:.2f}/{m['mcts']['accuracy']:.2f}" for m in metrics)
            print(f"  {variant:15s} {cells}")
    print(f"\nwrote {out / stem}.json and {out / stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
