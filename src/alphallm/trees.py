"""Search trees on disk: written, one file per problem, by ``search --save-trees``, and read back
(checked for the shape ``Tree.to_dict`` writes, so a damaged file is one line naming it)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeGuard

from alphallm.errors import UserError
from alphallm.io import atomic_dir, read_json, write_json, write_text

__all__ = [
    "SETTINGS_FILE",
    "is_loop_round",
    "is_loop_run",
    "load_trees",
    "read_trees",
    "round_dirs",
    "safe_file_names",
    "tree_files",
    "write_trees",
]

# Beside the trees: the search settings that made them, as a ``search --config`` file (seed included).
SETTINGS_FILE = "search.yaml"


def write_trees(
    directory: str | Path, trees: Sequence[dict[str, Any]], *, settings: dict[str, Any], about: str
) -> None:
    """Writes one file per tree, named after its problem id made safe (``safe_file_names``), and the
    settings, all at once (``atomic_dir``): a killed or failed rerun leaves the last whole set, never
    two runs' trees mixed. ``about`` heads the settings file as a comment (task, model, problems)."""
    import yaml

    names = safe_file_names([str(tree["problem_id"]) for tree in trees])
    with atomic_dir(directory, what="trees") as tmp:
        for tree, name in zip(trees, names):
            write_json(tmp / name, tree)
        header = "".join(f"# {line}\n" for line in about.splitlines())
        write_text(tmp / SETTINGS_FILE, header + yaml.safe_dump(settings, sort_keys=False))


_UNSAFE = re.compile(r"[^\w.-]+")


def safe_file_names(ids: Sequence[str], suffix: str = ".json") -> list[str]:
    """A distinct file name for each id, to save one file per problem in one directory: ids come from
    the user's problems file, so a run of characters other than letters, digits, '.', '_' and '-' (a
    '/' above all) becomes '_', a leading '.' ('..', a hidden name) is dropped, and a name two ids would
    share (``a/b`` and ``a_b``; ``A`` and ``a`` on a case-insensitive disk) gets ``-2``, ``-3``. Ids that
    are safe names already keep them."""
    stems = [_safe_stem(str(i)) for i in ids]
    names = [""] * len(stems)
    taken: set[str] = set()
    for k in sorted(range(len(stems)), key=lambda k: stems[k] != ids[k]):  # safe ids choose first
        name, n = stems[k], 1
        while name.lower() in taken:
            n += 1
            name = f"{stems[k]}-{n}"
        taken.add(name.lower())
        names[k] = name + suffix
    return names


def _safe_stem(text: str) -> str:
    stem = _UNSAFE.sub("_", text).lstrip(".")
    return stem.encode()[:150].decode(errors="ignore") or "problem"  # names are at most 255 bytes


def tree_files(inputs: Sequence[str | Path]) -> list[Path]:
    """The JSON files named, or found in the directories named (sorted). A loop run's directory gives
    each round's ``trees.json``, and a round's directory its own, not the records beside them."""
    files: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found = _loop_trees(path)
            found = sorted(path.glob("*.json")) if found is None else found
            if not found:
                raise UserError(f"{path}: no .json files in this directory")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{path}: no such file or directory")
    return files


_ROUND = re.compile(r"round-\d+")


def is_loop_run(path: Path) -> bool:
    """A loop run's directory (``runs/<name>``): it holds the settings the run last ran with."""
    return (path / "config.yaml").is_file()


def is_loop_round(path: Path) -> bool:
    """One of a loop run's ``round-<k>`` directories."""
    return bool(_ROUND.fullmatch(path.name)) and is_loop_run(path.parent)


def round_dirs(run_dir: Path) -> list[Path]:
    """A loop run's ``round-<k>`` directories, in round order."""
    rounds = [p for p in run_dir.iterdir() if p.is_dir() and _ROUND.fullmatch(p.name)]
    return sorted(rounds, key=lambda p: int(p.name[len("round-") :]))


def _loop_trees(path: Path) -> list[Path] | None:
    """The trees a loop run (``runs/<name>``) or one of its rounds (``round-<k>``) saved, rounds in order;
    None for any other directory."""
    rounds = [path] if is_loop_round(path) else round_dirs(path) if is_loop_run(path) else []
    if not rounds:
        return None
    found = [p / "trees.json" for p in rounds if (p / "trees.json").is_file()]
    if not found:
        raise UserError(
            f"{path}: no search trees (a loop round saves them in trees.json after its search; "
            "round 0 only evaluates)"
        )
    return found


def load_trees(path: Path) -> list[dict[str, Any]]:
    """The trees in one file: a single tree object or ``{"trees": [...]}``, each checked for the shape
    ``Tree.to_dict`` writes, so that a damaged file is one line naming it, not a KeyError deep in a
    label builder."""
    data = read_json(path)
    if isinstance(data, dict) and "results" in data and "trees" not in data and "nodes" not in data:
        raise UserError(
            f"{path}: a search's results, not its trees; search again with --save-trees DIR for them"
        )
    trees = data.get("trees") if isinstance(data, dict) and "trees" in data else [data]
    if not isinstance(trees, list) or not trees:
        raise UserError(f'{path}: "trees" must be a non-empty list of search trees')
    for i, tree in enumerate(trees):
        if not isinstance(tree, dict) or not isinstance(tree.get("nodes"), list):
            raise UserError(f'{path}: tree {i + 1}: not a search tree (no "nodes" list), see Tree.to_dict')
        wrong = _tree_fault(tree)
        if wrong:
            raise UserError(f"{path}: tree {i + 1}: {wrong}")
        tree.setdefault("problem_id", path.stem if len(trees) == 1 else f"{path.stem}[{i}]")
    return trees


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _tree_fault(tree: dict[str, Any]) -> str | None:
    """What is wrong with one saved tree's shape, or None. Nodes come parents first (``Tree.to_dict``
    numbers them so, and the label builders rely on it)."""
    if not isinstance(tree.get("root"), str):
        return "'root' must be the prompt text (a string)"
    if not tree["nodes"]:
        return "'nodes' is empty"
    ids: set[int] = set()
    for i, node in enumerate(tree["nodes"]):
        wrong = _node_fault(node, ids)
        if wrong:
            return f"node {i}: {wrong}"
        ids.add(node["id"])
    for node in tree["nodes"]:
        if any(child not in ids for child in node.get("children", [])):
            return f"node {node['id']}: 'children' names a node the tree does not have"
    completed = tree.get("completed")
    if completed is not None and not (
        isinstance(completed, dict)
        and completed.get("node") in ids
        and isinstance(completed.get("solution"), str)
    ):
        return "'completed' must hold the 'node' id it completes and its 'solution' text"
    return None


def _node_fault(node: Any, ids: set[int]) -> str | None:
    if not isinstance(node, dict):
        return "not a JSON object"
    if not _is_int(node.get("id")) or node["id"] in ids:
        return "'id' must be an integer that no other node has"
    parent = node.get("parent")
    if not _is_int(parent) or (parent >= 0 and parent not in ids):
        return "'parent' must be -1 (the root) or the id of a node listed before it"
    if not isinstance(node.get("text"), str):
        return "'text' must be a string"
    children = node.get("children", [])
    if not isinstance(children, list) or not all(_is_int(c) for c in children):
        return "'children' must be a list of node ids"
    if node.get("verified") not in (None, True, False):
        return "'verified' must be true, false or null"
    for name in ("value", "q"):
        if node.get(name) is not None and not isinstance(node[name], int | float):
            return f"'{name}' must be a number or null"
    rollouts = node.get("rollouts", [])
    if not isinstance(rollouts, list) or not all(
        isinstance(r, dict) and isinstance(r.get("text"), str) and r.get("verified") in (None, True, False)
        for r in rollouts
    ):
        return "'rollouts' must be a list of objects with a 'text' string and 'verified' true, false or null"
    return None


def read_trees(inputs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every saved search tree in the files and directories given (``search --save-trees``)."""
    return [tree for path in tree_files(inputs) for tree in load_trees(path)]
