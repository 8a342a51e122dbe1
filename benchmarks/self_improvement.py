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
    search_gate     not an ablation: the critic sets also gated by search on 100 dev problems
                    (``critics.gate_search``)
    search_guard    not an ablation: a policy is kept only if its eta-MCTS on 50 dev problems holds
                    up against the best kept so far (``evaluate.gate_search``)
    no_ab_guard     no_ab with the search guard: does the guard stop the decline no_ab's policies show?
    rest            rejection-sampling self-training (STaR / ReST-EM): sample N solutions per
                    problem, keep the verified ones, SFT; N is set so a round generates about as many
                    tokens as the full loop's search (measured from its round 1, or given with
                    --rest-samples: 46 for game24 at 7c59dea)

Runs go to ``runs/bench-improve/<task>[-small]-<variant>`` (resumable: re-running continues them).
Prints a table per task, writes ``self_improvement[-small].json`` and ``.png``.

    python benchmarks/self_improvement.py --tasks arith game24 --variants full --summarize

reads the rounds finished so far (the runs may still be going) without running anything, prints a
markdown table per run (test accuracy, the gate's dev scores, training-search solve rate, data sizes) and
writes ``self_improvement[-small]-partial.json`` and ``.png``.
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
from alphallm.io import write_json, write_text
from alphallm.loop import gate_record
from alphallm.report.run_report import critic_rounds
from alphallm.report.stats import binomial_se, noise_drops, round_changes

ROOT = Path(__file__).resolve().parents[1]

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "frozen_critics": {"critics": {"refresh": False}},
    "sft_only": {"learn": {"use_dpo": False}},
    "no_ab": {"search": {"mcts": {"adaptive_branching": False, "fixed_width": 2}}},
    "no_merge": {"search": {"mcts": {"merge": "off"}}},
    "no_rollouts": {"search": {"rollouts": 0}},
    "no_prm": {"critics": {"kinds": ["value", "orm"]}},
    "search_gate": {"critics": {"gate_search": 100}},
    "search_guard": {"evaluate": {"gate_search": 50}},
    "no_ab_guard": {
        "search": {"mcts": {"adaptive_branching": False, "fixed_width": 2}},
        "evaluate": {"gate_search": 50},
    },
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


def _prefix(task: str, small: bool) -> str:
    """The config name, and the runs' name before ``-<variant>``."""
    return f"{task}-small" if small else task


def _rest_samples(prefix: str, work: Path) -> int:
    """Samples per problem that match the full loop's round-1 search tokens (greedy-sized chains)."""
    full = work / f"{prefix}-full"
    search = json.loads((full / "round-1" / "search.json").read_text())
    evaluation = json.loads((full / "round-0" / "eval.json").read_text())
    per_problem = search["generated_tokens"] / max(1, search["problems"])
    return max(2, round(per_problem / max(1.0, evaluation["greedy"]["tokens_per_problem"])))


def _with_prerequisites(
    variants: list[str], prefix: str, work: Path, rest_samples: int | None = None
) -> list[str]:
    """``rest`` sizes its sampling by the full loop's round-1 search: run that first if it is missing
    (and only then: the full run may be going on in another process) and no ``--rest-samples`` is given."""
    if "rest" not in variants or rest_samples is not None:
        return variants
    others = [v for v in variants if v != "full"]
    needed = "full" in variants or not (work / f"{prefix}-full" / "round-1" / "search.json").exists()
    return ["full", *others] if needed else others


def run_variant(
    task: str, variant: str, rounds: int, work: Path, small: bool, rest_samples: int | None = None
) -> list[dict[str, Any]]:
    prefix = _prefix(task, small)
    base = yaml.safe_load((ROOT / "configs" / "improve" / f"{prefix}.yaml").read_text())
    config = _merge(base, VARIANTS[variant])
    config.update(name=f"{prefix}-{variant}", out_dir=str(work), rounds=rounds)
    if variant == "rest":
        config["search"]["samples"] = rest_samples or _rest_samples(prefix, work)
    path = work / f"{prefix}-{variant}.yaml"
    work.mkdir(parents=True, exist_ok=True)
    write_text(path, yaml.safe_dump(config, sort_keys=False))
    run_dir = work / f"{prefix}-{variant}"
    args = ["improve", "--config", str(path)] + (["--resume"] if run_dir.exists() else [])
    print("$ alphallm " + " ".join(args), flush=True)
    if alphallm(args) != 0:
        raise SystemExit(f"{prefix}-{variant} failed")
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def round_records(run_dir: Path) -> list[dict[str, Any]]:
    """Each finished round's test metrics with what the round trained on and what the gate saw."""
    metrics = []
    for k in range(1000):  # read from the round directories: a run still going has no final metrics
        round_dir = run_dir / f"round-{k}"
        evaluation = _read(round_dir / ("eval.json" if k == 0 else "evaluate.json"))
        if not evaluation:
            break
        evaluation.pop("seconds", None)
        m = {"round": k, **evaluation}
        metrics.append(m)
        search, data = _read(round_dir / "search.json"), _read(round_dir / "data.json")
        dpo = _read(round_dir / "dpo.json")
        m["train"] = {
            "search_accuracy": search.get("accuracy"),
            "search_tokens": search.get("generated_tokens"),
            "problems": data.get("problems"),
            "sft_rows": _read(round_dir / "sft.json").get("rows"),
            "dpo_pairs": None if dpo.get("skipped") else dpo.get("pairs"),
        }
        gate = gate_record(round_dir / "gate.json") if (round_dir / "gate.json").exists() else {}
        m["gate"] = {k: v for k, v in gate.items() if k != "seconds"}
    return metrics


def markdown(name: str, records: list[dict[str, Any]]) -> str:
    """The README's per-run table."""

    def cell(metric: dict[str, Any] | None) -> str:
        return f"{metric['accuracy']:.2f} ({metric['tokens_per_problem']:.0f} tok)" if metric else "-"

    def gate(g: dict[str, Any]) -> str:
        if not g:
            return "-"
        candidates = ", ".join(f"{k} {v:.2f}" for k, v in sorted(g.get("candidates", {}).items()))
        verdict = f"kept {g['kept']}" if g.get("accepted") else "rejected"
        guard = g.get("search_guard", {}).get("candidates", {})
        searched = "".join(
            f"; {name} search {c['accuracy']:.2f} against {c['reference']['accuracy']:.2f}"
            f"{'' if c['passed'] else ' (fails)'}"
            for name, c in guard.items()
        )
        return f"{verdict} ({g['metric']}: previous {g['previous_dev_accuracy']:.2f}; {candidates}{searched})"

    lines = [
        f"| {name} round | greedy (test) | eta-MCTS + verifier | eta-MCTS + learned critics "
        "| self-consistency (matched tokens) | gate (dev score) | critics (trained in round) "
        "| training search solved | SFT rows / DPO pairs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in records:
        t = m["train"]
        solved = f"{t['search_accuracy']:.2f} of {t['problems']}" if t["search_accuracy"] is not None else "-"
        data = f"{t['sft_rows']} / {t['dpo_pairs'] if t['dpo_pairs'] is not None else '(no DPO)'}"
        lines.append(
            f"| {m['round']} | {cell(m.get('greedy'))} | {cell(m.get('mcts'))} "
            f"| {cell(m.get('mcts_critics'))} | {cell(m.get('sc'))} | {gate(m['gate'])} "
            f"| {critic_rounds(m.get('critics'))} | {solved} "
            f"| {data if t['sft_rows'] else '-'} |"
        )
    return "\n".join(lines + changes(records))


def changes(records: list[dict[str, Any]]) -> list[str]:
    """Under the table: each round's change from the round before, paired over the test problems,
    and the rounds worse than the one before beyond noise (the issue's bar). Records without
    per-problem outcomes (runs from before they were kept) give nothing."""
    lines = []
    for method, name in (("greedy", "greedy"), ("mcts", "eta-MCTS + verifier")):
        by_round = round_changes(records, method)
        if by_round:
            steps = ", ".join(f"{k}: {c['change']:+.2f} (z {c['z']:+.1f})" for k, c in by_round.items())
            drops = noise_drops(records, method)
            verdict = f"worse beyond noise in rounds {', '.join(map(str, drops))}" if drops else "none worse"
            lines.append(f"- {name}, change from the round before: {steps}; {verdict}")
    return ["", *lines] if lines else []


def plot(results: dict[str, dict[str, list[dict[str, Any]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, len(results), figsize=(6 * len(results), 8), squeeze=False)
    for column, (task, variants) in enumerate(results.items()):
        for row, method in enumerate(("greedy", "mcts")):
            ax = axes[row][column]
            for variant, metrics in variants.items():
                ax.errorbar(
                    [m["round"] for m in metrics],
                    [m[method]["accuracy"] for m in metrics],
                    yerr=[
                        binomial_se(m[method]["accuracy"], len(m[method].get("solved", {}))) for m in metrics
                    ],
                    marker="o",
                    capsize=3,
                    label=variant,
                )
            ax.set_title(f"{task}: {method} accuracy (test)")
            ax.set_xlabel("round")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole
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
    parser.add_argument(
        "--summarize", action="store_true", help="run nothing: tabulate the rounds finished so far"
    )
    parser.add_argument(
        "--rest-samples",
        type=int,
        help="samples per problem for rest (default: matched to the full run's round-1 search tokens, "
        "which needs that run; its measured value can be given instead, e.g. 46 for game24)",
    )
    parser.add_argument(
        "--runs", nargs="+", metavar="DIR", help="with --summarize: these run directories, not the variants'"
    )
    parser.add_argument("--work", default="runs/bench-improve")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    work = Path(args.work)
    if args.summarize:
        runs = [Path(run) for run in args.runs] if args.runs else None
        return summarize(args.tasks, args.variants, work, Path(args.out), args.small, runs)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for task in args.tasks:
        results[task] = {
            variant: run_variant(task, variant, args.rounds, work, args.small, args.rest_samples)
            for variant in _with_prerequisites(
                args.variants, _prefix(task, args.small), work, args.rest_samples
            )
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "self_improvement-small" if args.small else "self_improvement"
    write_json(out / f"{stem}.json", results)
    plot(results, out / f"{stem}.png")
    for task, by_variant in results.items():
        print(f"\n{task}: test accuracy per round (greedy / eta-MCTS)")
        for variant, metrics in by_variant.items():
            cells = "  ".join(f"{m['greedy']['accuracy']:.2f}/{m['mcts']['accuracy']:.2f}" for m in metrics)
            print(f"  {variant:15s} {cells}")
    print(f"\nwrote {out / stem}.json and {out / stem}.png")
    return 0


def summarize(
    tasks: list[str], variants: list[str], work: Path, out: Path, small: bool, runs: list[Path] | None = None
) -> int:
    """Tables of the rounds finished so far: the variants' runs under ``work``, or the run directories
    given (``--runs``, any loop run; keyed by their task and directory name)."""
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    named = [
        (str(yaml.safe_load((run / "config.yaml").read_text())["task"]), run.name, run)
        for run in runs or []
        if (run / "config.yaml").is_file()
    ]
    if not runs:
        named = [(t, v, work / f"{_prefix(t, small)}-{v}") for t in tasks for v in variants]
    for task, name, run in named:
        records = round_records(run)
        if records:
            results.setdefault(task, {})[name] = records
            print(f"\n{markdown(run.name, records)}")
    if not results:
        raise SystemExit(f"no finished rounds in {', '.join(map(str, runs)) if runs else work}")
    out.mkdir(parents=True, exist_ok=True)
    stem = f"self_improvement{'-small' if small else ''}-partial"
    write_json(out / f"{stem}.json", results)
    plot(results, out / f"{stem}.png")
    print(f"\nwrote {out / stem}.json and {out / stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
