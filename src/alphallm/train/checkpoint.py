"""A training's whole state, saved now and then in one directory, so that a killed run resumes.

The state is whatever the trainer needs to go on exactly as if never stopped (weights, optimizer, data
order, random states, step); the directory is written atomically, and read back only by a run of the
same work (settings, data, starting weights), so a changed command starts over instead of resuming
someone else's training.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from alphallm.io import atomic_dir, check_out_dir

__all__ = ["Checkpoint", "checkpoint_beside", "steps_to"]


def checkpoint_beside(out: str | Path) -> Path:
    """Where a command writing ``out`` keeps its training's checkpoint (``<out>.checkpoint``), checked
    now: a file there would fail only at the first checkpoint, after the training before it."""
    return check_out_dir(f"{out}.checkpoint", what="checkpoint")


class Checkpoint:
    """Saves and reads ``<path>/state.pt`` for one ``work`` (plain data: what must match to resume)."""

    def __init__(self, path: str | Path, work: Any) -> None:
        self.path = Path(path)
        self._work = json.dumps(work, sort_keys=True, default=str)

    def save(self, state: dict[str, Any]) -> None:
        with atomic_dir(self.path, what="checkpoint") as tmp, open(tmp / "state.pt", "wb") as handle:
            torch.save(state | {"work": self._work}, handle)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before it replaces the last one

    def load(self) -> dict[str, Any] | None:
        """The saved state of this work, or None: none saved, unreadable, or saved for other work (which
        this run then replaces)."""
        try:
            # Our own file (random states are tuples, histories dicts): not only tensors.
            state = torch.load(self.path / "state.pt", weights_only=False)
        except Exception:  # a damaged pickle raises almost anything (UnicodeDecodeError, MemoryError...)
            return None
        return state if isinstance(state, dict) and state.get("work") == self._work else None

    def remove(self) -> None:
        """Once the result is saved: kept, it would outlive its use."""
        shutil.rmtree(self.path, ignore_errors=True)


def steps_to(advance: Callable[[int], None]) -> Callable[[int, float], None]:
    """A trainer's ``on_step(step, loss)`` that moves a progress bar's ``advance(k)`` to ``step + 1``: a
    resumed run's first step is past its checkpoint's, and the bar takes those steps at once."""
    shown = 0

    def on_step(step: int, loss: float) -> None:
        nonlocal shown
        advance(step + 1 - shown)
        shown = step + 1

    return on_step
