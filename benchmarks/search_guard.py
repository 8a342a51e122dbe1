"""What would the policy gate's search guard (``evaluate.gate_search``) have done in a finished run?

    python benchmarks/search_guard.py --run runs/bench-improve-48ec34e/game24-small-full --problems 50

Round by round, each candidate the run's gate kept meets the best policy kept before it on the guard's
dev search (the evaluate stage's eta-MCTS with the verifier, the run's seed, the first ``--problems``
dev problems), as ``loop_gate.search_guard`` does inside the loop. The first round it fails ends the
replay: from there a guarded run would have kept other policies. The searches are saved in the run's
round directories (``gate_search-<name>.json``), where a run resumed with the same ``evaluate.gate_search``
reuses them. Prints a table and writes ``search_guard-<run>.json``.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from _sweep import open_run, run_parser

from alphallm.io import write_json
from alphallm.loop import Loop
from alphallm.loop_gate import search_guard


def replay(loop: Loop) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    k = 1
    while (loop.round_dir(k) / "gate.json").exists():
        gate = loop.gate(k)
        if not gate["accepted"]:
            rows.append({"round": k, "kept": None})
        else:
            rows.append({"round": k, "kept": gate["kept"], **search_guard(loop, k, gate["kept"])})
            print(f"round {k} searched", flush=True)
            if not rows[-1]["passed"]:
                break
        k += 1
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| round | kept by the dev score | its dev search | best kept before it (round) "
        "| change ± se | guard |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["kept"] is None:
            lines.append(f"| {r['round']} | rejected | - | - | - | - |")
            continue
        ref = r["reference"]
        lines.append(
            f"| {r['round']} | {r['kept']} | {r['accuracy']:.2f} | {ref['accuracy']:.2f} ({ref['round']}) "
            f"| {r['change']:+.2f} ± {r['se']:.2f} | {'passes' if r['passed'] else 'fails'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = run_parser(__doc__)
    parser.add_argument("--problems", type=int, default=50, help="dev problems the guard searches")
    args = parser.parse_args(argv)
    run = Path(args.run)
    loop = open_run(run)
    loop.config = replace(loop.config, evaluate=replace(loop.config.evaluate, gate_search=args.problems))
    rows = replay(loop)
    out = Path(args.out) / f"search_guard-{run.name}.json"
    write_json(out, {"run": str(run), "problems": args.problems, "rows": rows})
    print(f"\n{run.name}: the search guard on {args.problems} dev problems")
    print(table(rows))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
