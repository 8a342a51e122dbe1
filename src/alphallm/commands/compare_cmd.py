"""``alphallm compare A [B]``: is a difference in accuracy more than noise? Paired over the problems
both measured: two searches or evaluations, two loop runs (round by round, method by method), or
one run's rounds against the round before."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from alphallm.errors import UserError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="paired accuracy difference with its standard error and z: two results or runs, "
        "or one run's rounds",
    )
    p.add_argument("a", metavar="A", help="a search or eval result (--out JSON) or a loop run directory")
    p.add_argument(
        "b",
        metavar="B",
        nargs="?",
        help="another result or run; a result against a run pairs with each of the run's rounds of its "
        "method; omitted with a run directory: each round against the one before",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from alphallm.commands._ui import console
    from alphallm.report.compare import check_same_task, compare, load_outcomes, round_by_round

    if args.b is not None:
        a, b = load_outcomes(args.a), load_outcomes(args.b)
        check_same_task(args.a, args.b)
        rows = compare(a, b)
        title = f"A: {args.a}   B: {args.b}"
    elif Path(args.a).is_dir():
        rows = round_by_round(args.a)
        title = f"{args.a}: each round (B) against the round before (A)"
    else:
        raise UserError(f"{args.a}: compare it with a second result B (one input alone must be a loop run)")
    table = Table(title=title, header_style="bold")
    for column in ("", "problems", "A", "B", "B - A", "se", "z"):
        table.add_column(column, justify="left" if not column else "right")
    for row in rows:
        table.add_row(
            row["label"],
            str(row["problems"]),
            f"{row['before']:.3f}",
            f"{row['after']:.3f}",
            f"{row['change']:+.3f}",
            f"{row['se']:.3f}",
            z_cell(row),
        )
    console.print(table)
    console.print(
        "z = (B - A) / se, paired over the shared problems; |z| > 2 (bold) is beyond noise; "
        "n/a: se 0, no spread to measure the noise by"
    )
    return 0


def z_cell(row: dict[str, Any]) -> str:
    """z as the table shows it. With se 0 (one shared problem, or every problem changed alike) z is
    infinite or 0, yet there is no spread to tell noise by: n/a, never bold."""
    if not row["se"] > 0:
        return "n/a"
    z = f"{row['z']:+.1f}"
    return f"[bold]{z}[/]" if abs(row["z"]) > 2 else z
