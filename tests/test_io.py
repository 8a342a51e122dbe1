"""Atomic writes: a write that fails part-way leaves the finished file or directory as it was, and no
temporary file behind (what a killed or crashed run relies on to resume)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from alphallm.io import atomic_dir, dumps, write_json, write_text


class Interrupted(BaseException):
    """Stands for a KeyboardInterrupt or SystemExit arriving mid-write."""


class _Breaks:
    def __str__(self) -> str:
        raise Interrupted


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "round-1" / "sft.json"
    write_json(path, {"rows": 483})
    with pytest.raises(Interrupted):
        write_json(path, {"rows": 484, "broken": _Breaks()})  # dumps calls str() on it
    with pytest.raises(TypeError):
        write_text(path, 123)  # type: ignore[arg-type]  # fails inside the open temporary file
    assert json.loads(path.read_text()) == {"rows": 483}
    assert [p.name for p in path.parent.iterdir()] == ["sft.json"]


def test_a_failed_directory_write_keeps_the_old_directory(tmp_path: Path) -> None:
    target = tmp_path / "policy"
    with atomic_dir(target) as tmp:
        (tmp / "model.safetensors").write_text("round 1")
    with pytest.raises(Interrupted), atomic_dir(target) as tmp:
        (tmp / "model.safetensors").write_text("half of round 2")
        raise Interrupted
    assert (target / "model.safetensors").read_text() == "round 1"
    with atomic_dir(target) as tmp:  # a finished write replaces it whole
        (tmp / "config.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["policy"]


def test_non_finite_floats_are_written_as_null() -> None:
    text = dumps({"z": math.inf, "r": [math.nan, 0.5]})
    assert json.loads(text) == {"z": None, "r": [None, 0.5]} and "Infinity" not in text
