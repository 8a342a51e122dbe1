"""Atomic file and directory writes (a killed process never leaves a half-written output behind) and
the lock that keeps two processes out of one run directory."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alphallm.errors import UserError

__all__ = [
    "atomic_dir",
    "dumps",
    "exclusive",
    "load_trees",
    "read_trees",
    "tree_files",
    "write_json",
    "write_text",
]


def write_text(path: str | Path, text: str) -> None:
    """Writes ``text`` to a temporary file beside ``path``, then renames it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dumps(data: Any, **kwargs: Any) -> str:
    """JSON text of ``data`` that strict readers accept: a non-finite float (a z-score of an se of 0, a
    correlation of constant scores) is written as null, not as Python's ``Infinity`` or ``NaN``, which jq,
    JavaScript and most JSON libraries outside Python reject."""
    return json.dumps(_finite(data), allow_nan=False, default=str, **kwargs)


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(value) for value in data]
    return data


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, dumps(data, indent=2) + "\n")


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yields a temporary directory; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary directory
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def exclusive(directory: str | Path, what: str) -> Iterator[None]:
    """Holds ``directory``'s lock file while the block runs; a second process is refused with a
    one-line error. The OS drops the lock when its holder dies, so a killed run leaves none behind."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): run unguarded rather than not at all
        yield
        return
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise UserError(
                f"{directory} is in use by another {what} (pid {holder}); wait for it or stop it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tree_files(inputs: Sequence[str | Path]) -> list[Path]:
    """The JSON files named, or found in the directories named (sorted)."""
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


def read_trees(inputs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every saved search tree in the files and directories given (``search --save-trees``)."""
    return [tree for path in tree_files(inputs) for tree in load_trees(path)]


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file of settings as a dict; a missing file, bad YAML or a non-mapping is one line."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of settings")
    return data
