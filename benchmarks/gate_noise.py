"""How noisy is the loop's dev gate? Each kept policy of a run, scored on the run's dev problems both
ways the gate can score it, and every round's change with its paired standard error.

    python benchmarks/gate_noise.py --run runs/bench-improve/game24-full --rounds 0 1 2 3

For every listed round k, the policy the round kept (round 0: the starting policy; a rejected round:
its best candidate, the one the gate turned away) is scored by greedy accuracy and by the mean accuracy
of ``--samples`` solutions per dev problem at ``--temperature`` (``evaluate.gate_metric: sampled``),
with the run's seed, as the gate scores. A change between consecutive rounds is a paired difference
over the same dev problems; its standard error is the standard deviation of the per-problem
differences over sqrt(problems), and z is their ratio. A gate that decides on a change with |z| < 2
decides on noise. Prints a table and writes ``gate_noise-<run>.json``.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from _sweep import open_run, run_parser

from alphallm.io import write_json
from alphallm.loop import Loop
from alphallm.report.stats import paired_change


def candidate(loop: Loop, k: int) -> str:
    """The policy round k kept, or the candidate its gate rejected (the one a gate decides about)."""
    if k == 0 or not (loop.round_dir(k) / "gate.json").is_file() or loop.gate(k)["kept"] is None:
        return loop.policy(k)  # the start, a round not gated yet, or one with nothing trained
    return str(loop.round_dir(k) / loop.gate(k)["kept"])


def per_problem(loop: Loop, policy: str, metric: str, samples: int, temperature: float) -> dict[str, float]:
    """Each dev problem's accuracy as the gate scores it with ``metric`` (0 or 1 for greedy, the
    fraction of samples solved otherwise)."""
    settings = replace(
        loop.config.evaluate, gate_metric=metric, gate_samples=samples, gate_temperature=temperature
    )
    result = Loop(replace(loop.config, evaluate=settings)).dev_evaluation(policy)
    solved: dict[str, list[bool]] = defaultdict(list)
    for record in result.records:
        solved[record.problem_id].append(record.correct)
    return {pid: sum(c) / len(c) for pid, c in solved.items()}


def main(argv: list[str] | None = None) -> int:
    parser = run_parser(__doc__)
    parser.add_argument("--rounds", type=int, nargs="+", required=True, help="rounds, 0 for the start")
    parser.add_argument("--samples", type=int, default=16, help="solutions per dev problem (sampled)")
    parser.add_argument("--temperature", type=float, default=0.7)
    args = parser.parse_args(argv)
    run = Path(args.run)
    loop = open_run(run)
    scores: dict[str, dict[int, dict[str, float]]] = {"greedy": {}, "sampled": {}}
    policies = {k: candidate(loop, k) for k in args.rounds}
    for k, policy in policies.items():
        for metric in scores:
            scores[metric][k] = per_problem(loop, policy, metric, args.samples, args.temperature)
        print(f"round {k} ({policy}) scored", flush=True)
    rows: list[dict[str, Any]] = []
    for before, after in zip(args.rounds, args.rounds[1:], strict=False):
        row: dict[str, Any] = {"from": before, "to": after}
        for metric, by_round in scores.items():
            row[metric] = {
                "before": sum(by_round[before].values()) / len(by_round[before]),
                "after": sum(by_round[after].values()) / len(by_round[after]),
                **paired_change(by_round[before], by_round[after]),
            }
        rows.append(row)
    sampled = replace(
        loop.config.evaluate,
        gate_metric="sampled",
        gate_samples=args.samples,
        gate_temperature=args.temperature,
    )
    label = sampled.gate_score  # the name the gate records for this score
    print(f"\n{run.name}, {loop.config.evaluate.dev_problems} dev problems")
    print(f"| rounds | greedy: change ± se (z) | {label}: change ± se (z) |\n|---|---|---|")
    for row in rows:
        cells = [
            f"{row[m]['before']:.3f} → {row[m]['after']:.3f}: {row[m]['change']:+.3f} ± {row[m]['se']:.3f} "
            f"({row[m]['z']:+.1f})"
            for m in ("greedy", "sampled")
        ]
        print(f"| {row['from']} → {row['to']} | {cells[0]} | {cells[1]} |")
    out = Path(args.out) / f"gate_noise-{run.name}.json"
    write_json(
        out,
        {
            "run": str(run),
            "dev_problems": loop.config.evaluate.dev_problems,
            "policies": {str(k): p for k, p in policies.items()},
            "sampled": {"samples": args.samples, "temperature": args.temperature},
            "rows": rows,
        },
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
