"""Chunks of a problem set and the directory their results stream into, one file per chunk.

A chunk is a run of whole batches of a search (or of ``evaluate``'s decoding), so solving it alone
reproduces what a single process solving the whole set would get (see ``solve(..., offset=)``). Each
file is written atomically and carries a fingerprint of the work it did (task, models, settings,
problems), so a resumed run takes a finished chunk only if it asks for the same work, and redoes
everything else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alphallm.io import check_out_dir, write_json
from alphallm.tasks.base import Problem

__all__ = ["Chunk", "ChunkStore", "chunk_payload", "chunks_beside", "plan_chunks"]


@dataclass(frozen=True)
class Chunk:
    """Problems ``[start, stop)`` of the whole set; ``index`` names its file."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def chunk_payload(report: Any) -> dict[str, Any]:
    """A solved chunk as plain data: its results (trees included), model usage and seconds."""
    return {
        "results": [asdict(r) for r in report.results],
        "usage": report.usage,
        "seconds": report.wall_seconds,
    }


def chunks_beside(out: str | Path) -> Path:
    """Where a command writing the results file ``out`` streams its finished chunks (``<out>.chunks``),
    so that rerunning it after a kill resumes there; checked now, since a file there would fail only
    after the first batch. The command removes it once ``out`` is written."""
    return check_out_dir(f"{out}.chunks", what="chunks")


def plan_chunks(count: int, *, batch_size: int, chunk_batches: int) -> list[Chunk]:
    """Consecutive chunks of ``chunk_batches`` whole batches each (the last may be shorter)."""
    step = batch_size * chunk_batches
    return [Chunk(i, start, min(start + step, count)) for i, start in enumerate(range(0, count, step))]


class ChunkStore:
    """Finished chunks under ``directory`` (``chunk-00000.json``, ...).

    Args:
        directory: where the chunk files live (created on the first save).
        work: what every chunk of this run shares (task, models, settings) as plain data; a file
            made for other work is not taken.
    """

    def __init__(self, directory: str | Path, work: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self._work = json.dumps(work, sort_keys=True, default=str)

    def path(self, chunk: Chunk) -> Path:
        return self.directory / f"chunk-{chunk.index:05d}.json"

    def fingerprint(self, chunk: Chunk, problems: Sequence[Problem]) -> str:
        """A digest of the run's work and of this chunk's place and problems."""
        mine = json.dumps([chunk.start, [asdict(p) for p in problems]], sort_keys=True)
        return hashlib.sha256(f"{self._work}\n{mine}".encode()).hexdigest()

    def load(self, chunk: Chunk, problems: Sequence[Problem]) -> dict[str, Any] | None:
        """The saved payload of a chunk, or None when it is missing, unreadable or for other work."""
        try:
            data = json.loads(self.path(chunk).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("fingerprint") != self.fingerprint(chunk, problems):
            return None
        return data

    def save(self, chunk: Chunk, problems: Sequence[Problem], payload: dict[str, Any]) -> dict[str, Any]:
        """Writes a finished chunk atomically; returns it as it reads back (JSON types)."""
        data = {"fingerprint": self.fingerprint(chunk, problems), "chunk": asdict(chunk), **payload}
        write_json(self.path(chunk), data)
        # Round-trip through JSON so that fresh and resumed chunks give identical reports.
        loaded: dict[str, Any] = json.loads(json.dumps(data, default=str))
        return loaded
