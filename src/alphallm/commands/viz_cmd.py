"""``alphallm viz``: one self-contained HTML page to browse trees saved by ``search --save-trees``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from alphallm.errors import UserError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("viz", help="an HTML page that browses saved search trees (no network needed)")
    p.add_argument(
        "trees",
        nargs="+",
        metavar="TREES",
        help="tree JSON files (from search --save-trees) or directories of them; a loop run (runs/NAME) or "
        "one of its rounds: the trees its searches saved",
    )
    p.add_argument(
        "--out",
        help="HTML file to write (default: <first input>.html beside it, or trees.html in a directory)",
    )
    p.set_defaults(run=run)


def default_out(first_input: str) -> Path:
    path = Path(first_input)
    return path / "trees.html" if path.is_dir() else path.with_suffix(".html")


def run(args: argparse.Namespace) -> int:
    from alphallm.io import check_out_file, write_text
    from alphallm.report.tree_html import render_tree_html
    from alphallm.trees import read_trees, tree_files

    files = tree_files(args.trees)
    out = Path(args.out) if args.out else default_out(args.trees[0])
    if any(out.resolve() == path.resolve() for path in files):
        raise UserError(f"{out}: is one of the inputs; pass another --out")
    check_out_file(out)  # before reading many trees and rendering them
    trees = read_trees(files)
    more = f" and {len(files) - 1} more" if len(files) > 1 else ""
    write_text(out, render_tree_html(trees, title=f"alphallm trees: {files[0].name}{more}"))
    print(f"tree viewer ({len(trees)} tree{'s' * (len(trees) != 1)}): {out}")
    return 0
