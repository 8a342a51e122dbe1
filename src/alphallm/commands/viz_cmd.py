"""``alphallm viz``: one self-contained HTML page to browse trees saved by ``search --save-trees``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from alphallm.errors import UserError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("viz", help="an HTML page that browses saved search trees (no network needed)")
    p.add_argument(
        "trees",
        nargs="+",
        metavar="TREES",
        help="tree JSON files (from search --save-trees) or directories of them",
    )
    p.add_argument(
        "--out",
        help="HTML file to write (default: <first input>.html beside it, or trees.html in a directory)",
    )
    p.set_defaults(run=run)


def _json_files(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = sorted(path.glob("*.json"))
            if not found:
                raise UserError(f"{path}: no .json files in this directory")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{path}: no such file or directory")
    return files


def load_trees(path: Path) -> list[dict[str, Any]]:
    """The trees in one file: a single tree object or ``{"trees": [...]}``."""
    try:
        # NaN/Infinity would survive json.loads but break JSON.parse in the page: read them as null.
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=lambda _: None)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise UserError(f"{path}: not valid JSON ({exc})") from exc
    trees = data.get("trees") if isinstance(data, dict) and "trees" in data else [data]
    if not isinstance(trees, list) or not trees:
        raise UserError(f'{path}: "trees" must be a non-empty list of search trees')
    for i, tree in enumerate(trees):
        if not isinstance(tree, dict) or not isinstance(tree.get("nodes"), list):
            raise UserError(f'{path}: not a search tree (no "nodes" list), see Tree.to_dict')
        tree.setdefault("problem_id", path.stem if len(trees) == 1 else f"{path.stem}[{i}]")
    return trees


def default_out(first_input: str) -> Path:
    path = Path(first_input)
    return path / "trees.html" if path.is_dir() else path.with_suffix(".html")


def run(args: argparse.Namespace) -> int:
    from alphallm.io import write_text
    from alphallm.report.tree_html import render_tree_html

    files = _json_files(args.trees)
    trees = [tree for path in files for tree in load_trees(path)]
    out = Path(args.out) if args.out else default_out(args.trees[0])
    if any(out.resolve() == path.resolve() for path in files):
        raise UserError(f"{out}: is one of the inputs; pass another --out")
    more = f" and {len(files) - 1} more" if len(files) > 1 else ""
    write_text(out, render_tree_html(trees, title=f"alphallm trees: {files[0].name}{more}"))
    print(f"tree viewer ({len(trees)} tree{'s' * (len(trees) != 1)}): {out}")
    return 0
