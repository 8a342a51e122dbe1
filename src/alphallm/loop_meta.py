"""A loop run's record of itself: ``config.yaml`` (the settings it last ran with) and ``meta.json``
(version, git hash, start time, and every change of settings or code a resumed run was given)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from alphallm.errors import UserError
from alphallm.io import write_json, write_text
from alphallm.loop_config import LoopConfig

__all__ = ["write_run_record"]


def write_run_record(
    run_dir: Path,
    config: LoopConfig,
    *,
    position: Callable[[], dict[str, Any]],
    message: Callable[[str], None],
) -> None:
    """Writes ``config.yaml`` and ``meta.json``. A resumed run may be given other settings or run other
    code; the stages already done keep what they ran with, so the record says from where on each change
    applies (``position()``: the rounds done and the first stage not yet done)."""
    import yaml

    from alphallm import __version__

    run_dir.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(asdict(config), sort_keys=False)
    resolved = yaml.safe_load(text)  # as it reads back, so that tuples compare equal to lists
    config_path, meta_path = run_dir / "config.yaml", run_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    git, now, resumed = _git_hash(), time.strftime("%Y-%m-%dT%H:%M:%S"), bool(meta)
    if not resumed:
        meta = {"version": __version__, "git": git, "started": now}
    elif git != ([meta.get("git")] + [c["git"] for c in meta.get("code_changes", [])])[-1]:
        # Resumed with other code: the stages done so far ran with the code before.
        meta.setdefault("code_changes", []).append({"at": now, **position(), "git": git})
        message(f"resuming with other code: git {git}")
    if resumed and config_path.exists():
        before = yaml.safe_load(config_path.read_text()) or {}
        _check_same_run(run_dir, before, resolved)
        defaults = yaml.safe_load(yaml.safe_dump(asdict(LoopConfig()), sort_keys=False))
        changes = _changed(before, resolved, defaults)
        if changes:
            meta.setdefault("config_changes", []).append({"at": now, **position(), "changes": changes})
            message("resuming with changed settings: " + "; ".join(changes))
    write_json(meta_path, meta)
    write_text(config_path, text)


# What a run is: its rounds are measured against round 0, the starting policy on this task. Other
# settings may change on resume (the record says from where on); these would make another run.
IDENTITY = ("task", "policy")


def _check_same_run(run_dir: Path, before: dict[str, Any], after: dict[str, Any]) -> None:
    for key in IDENTITY:
        if key in before and before[key] != after.get(key):
            raise UserError(
                f"{run_dir}: a run of {key} {before[key]!r} cannot resume as {key} {after.get(key)!r}; "
                "give the new run another --name (demo: --out-dir)"
            )


def _changed(before: Any, after: Any, defaults: Any, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every setting that differs between two nested mappings. A setting the
    run's earlier code did not have (absent ``before``) that keeps its default is no change: new
    settings default to what the code did before them. Nor is one the code no longer has (absent
    ``after`` and from the defaults: ``loop_config.RETIRED``)."""
    if isinstance(before, dict) and isinstance(after, dict):
        defaults = defaults if isinstance(defaults, dict) else {}
        return [
            line
            for key in sorted(set(before) | set(after), key=str)
            if key in after or key in defaults
            if key in before or key not in defaults or after.get(key) != defaults[key]
            for line in _changed(before.get(key), after.get(key), defaults.get(key), f"{prefix}{key}.")
        ]
    return [] if before == after else [f"{prefix[:-1]}: {before!r} -> {after!r}"]


def _git_hash() -> str | None:
    """The commit the package runs from, ``-dirty`` when its files differ from it (None outside git)."""
    here = Path(__file__).parent
    try:
        head, dirty = (
            subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=here)
            for args in (["rev-parse", "HEAD"], ["status", "--porcelain", "--untracked-files=no"])
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    return (commit + ("-dirty" if dirty.stdout.strip() else "")) if head.returncode == 0 and commit else None
