"""A critic directory's ``critic.json``: the one file read before any weights. It says the critic's
kind, the task whose trees it learned from, and for a LoRA critic the base its adapters sit on, so that a
critic given in the wrong place (as another kind, to another task) is refused before it loads."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alphallm.errors import UserError, first_line

__all__ = ["KINDS", "check_critic_task", "lora_base", "read_meta"]

KINDS = ("value", "prm", "orm")


def read_meta(directory: Path) -> dict[str, Any]:
    """A critic directory's ``critic.json``, checked: the one file read before any weights."""
    path = directory / "critic.json"
    if not path.is_file():
        raise UserError(f"{directory}: not a critic directory (no critic.json)")
    try:
        meta = json.loads(path.read_text())
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise UserError(f"{directory}: critic.json is not valid JSON ({first_line(exc)})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{directory}: critic.json is not a JSON object")
    if meta.get("kind") not in KINDS:
        raise UserError(
            f"{directory}: critic.json kind {meta.get('kind')!r} is not one of {', '.join(KINDS)}"
        )
    return meta


def check_critic_task(directory: str | Path, task: str, meta: Mapping[str, Any] | None = None) -> None:
    """A critic scores the texts of the task whose trees it learned from; on another task's texts its
    scores mean nothing, and a search or evaluation would run on quietly. Critics saved before their
    ``critic.json`` named a task pass. ``meta``: the critic.json already read."""
    trained_on = (meta if meta is not None else read_meta(Path(directory))).get("task")
    if trained_on is not None and trained_on != task:
        raise UserError(f"{directory}: a critic trained on {trained_on} trees, given {task} problems")


def lora_base(directory: str | Path) -> str | None:
    """The base model a LoRA critic's adapters sit on (its ``critic.json``'s ``lora_base``), which
    its scores depend on as much as on its own files; None for another critic or an unreadable one."""
    directory = Path(directory)
    if not (directory / "backbone" / "adapter_config.json").is_file():
        return None
    try:
        base = json.loads((directory / "critic.json").read_text()).get("lora_base")
    except (OSError, ValueError, AttributeError):
        return None
    return base if isinstance(base, str) else None
