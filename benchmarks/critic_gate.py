"""Does the loop's critic gate keep the critics that search better? For each listed round whose gate
kept an earlier round's critic, the round's policy searches the test problems twice with its learned
critics and no verifier (the loop's "eta-MCTS + learned critics"): once with the critics the gate kept,
once with all of the round's retrained ones.

    python benchmarks/critic_gate.py --run runs/bench-improve/game24-small-full --rounds 2 3 4

Same policy, problems, search settings and seed as the loop's evaluation (``--problems`` test problems,
default the run's ``evaluate.search_problems``); the change is paired over the problems, with its
standard error (as ``gate_noise.py``). Prints a table and writes ``critic_gate-<run>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from _sweep import open_run, run_parser

from alphallm.io import write_json
from alphallm.loop import Loop
from alphallm.loop_solve import evaluation_searches, solve_with, solved_by_problem
from alphallm.report.run_report import critic_rounds
from alphallm.report.stats import paired_change


def search(loop: Loop, k: int, critics: dict[str, str], problems: int) -> dict[str, Any]:
    """The loop's learned-critics test search of round k's policy with ``critics``."""
    settings = loop.config.evaluate
    config = evaluation_searches(settings, critics, loop.config.seed)["mcts_critics"]
    report = solve_with(
        loop.task, loop.task.problems("test")[:problems], policy=loop.policy(k), config=config
    )
    return {
        "accuracy": report.accuracy,
        "tokens_per_problem": report.generated_tokens / max(1, len(report.results)),
        "solved": solved_by_problem(report.results),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| round | critics kept by the gate (trained in round) | gate: measure, retrained vs in use "
        "| kept critics | retrained critics | kept − retrained ± se (z) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        gates = "; ".join(
            f"{kind} {g['measure']} {g.get('new', float('nan')):.3f} vs {g.get('previous', float('nan')):.3f}"
            for kind, g in row["gates"].items()
        )
        kept, retrained = (
            f"{r['accuracy']:.2f} ({r['tokens_per_problem']:.0f} tok)"
            for r in (row["searches"]["kept"], row["searches"]["retrained"])
        )
        c = row["change"]
        lines.append(
            f"| {row['round']} | {critic_rounds(row['critics'])} | {gates} | {kept} | {retrained} "
            f"| {c['change']:+.3f} ± {c['se']:.3f} ({c['z']:+.1f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = run_parser(__doc__)
    parser.add_argument("--rounds", type=int, nargs="+", required=True)
    parser.add_argument("--problems", type=int, help="test problems (default: evaluate.search_problems)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    loop = open_run(run)
    problems = args.problems or loop.config.evaluate.search_problems
    rows: list[dict[str, Any]] = []
    out = Path(args.out) / f"critic_gate-{run.name}.json"
    for k in args.rounds:
        record = json.loads((loop.round_dir(k) / "critics.json").read_text())
        kept = loop.critic_rounds(k)
        retrained = {kind: k for kind in record.get("trained", [])}
        if kept == retrained:
            print(f"round {k}: the gate kept every retrained critic; nothing to compare")
            continue
        gates = {kind: record[kind]["gate"] for kind in retrained if "gate" in record[kind]}
        searches = {
            "kept": search(loop, k, loop.critics(k), problems),
            "retrained": search(
                loop, k, {kind: str(loop.critic_dir(k, kind)) for kind in retrained}, problems
            ),
        }
        solved = {name: r.pop("solved") for name, r in searches.items()}
        change = paired_change(solved["retrained"], solved["kept"])
        rows.append({"round": k, "critics": kept, "gates": gates, "searches": searches, "change": change})
        write_json(out, {"run": str(run), "problems": problems, "rows": rows})  # each round as it ends
        print(f"round {k} searched", flush=True)
    print(f"\n{run.name}: eta-MCTS with learned critics, no verifier, {problems} test problems")
    print(table(rows))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
