"""A training's whole state, saved now and then in one directory, so that a killed run resumes.

The state is whatever the trainer needs to go on exactly as if never stopped (weights, optimizer, data
order, random states, step); the directory is written atomically, and read back only by a run of the
same work (settings, data, starting weights), so a changed command starts over instead of resuming
someone else's training. ``Resume`` does this for the trainers that pass over their data in epochs
(SFT, DPO, critics); pretraining, which draws steps rather than epochs, saves its own state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from alphallm.io import atomic_dir, check_out_dir, write_text
from alphallm.train.lora import restore_trainable, snapshot_trainable

__all__ = [
    "Checkpoint",
    "Resume",
    "checkpoint_beside",
    "restore_torch_random",
    "steps_to",
    "torch_random",
    "training_checkpoint",
]

T = TypeVar("T")
log = logging.getLogger(__name__)


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
        file = self.path / "state.pt"
        if not file.exists():
            return None
        try:
            # Our own file (random states are tuples, histories dicts): not only tensors.
            state = torch.load(file, weights_only=False)
        except Exception as exc:  # a damaged pickle raises almost anything (UnicodeDecodeError...)
            # Said, so that a long stage taking its full time again has a reason in the log.
            log.warning("checkpoint %s is unreadable (%s); training starts over", file, type(exc).__name__)
            return None
        if not isinstance(state, dict) or state.get("work") != self._work:
            _starting_over(self.path)
            return None
        return state

    def directory(self) -> Path:
        """The checkpoint as a directory its trainer fills itself (TRL writes its own ``checkpoint-N``
        folders): emptied first when it holds another work's, then marked with this work."""
        mark = self.path / "work.json"
        try:
            same = mark.read_text() == self._work
        except (OSError, UnicodeDecodeError):
            same = False
        if not same:
            if self.path.is_dir() and any(self.path.iterdir()):
                _starting_over(self.path)
            shutil.rmtree(self.path, ignore_errors=True)
            self.path.mkdir(parents=True)
            write_text(mark, self._work)
        return self.path

    def remove(self) -> None:
        """Once the result is saved: kept, it would outlive its use."""
        shutil.rmtree(self.path, ignore_errors=True)


def _starting_over(path: Path) -> None:
    log.warning(
        "checkpoint %s is another training's (its settings, data or starting weights differ); "
        "this one starts over",
        path,
    )


def steps_to(advance: Callable[[int], None]) -> Callable[[int, float], None]:
    """A trainer's ``on_step(step, loss)`` that moves a progress bar's ``advance(k)`` to ``step + 1``: a
    resumed run's first step is past its checkpoint's, and the bar takes those steps at once."""
    shown = 0

    def on_step(step: int, loss: float) -> None:
        nonlocal shown
        advance(step + 1 - shown)
        shown = step + 1

    return on_step


def training_checkpoint(path: str | Path, data: Any, config: Any, **models: tuple[Any, Any]) -> Checkpoint:
    """The checkpoint of a training on ``data`` (rows, pairs: hashed) with ``config`` (a dataclass whose
    ``checkpoint_every`` does not matter) from ``models`` (name: (the loaded model, its files as
    ``lm.loading.model_files`` lists them)): resumed only by the same data, settings and starting
    weights, in the same dtype on the same kind of device."""
    text = json.dumps(data, default=_plain)
    settings = {k: v for k, v in asdict(config).items() if k != "checkpoint_every"}
    loaded = {}
    for name, (model, files) in models.items():
        weights = next(model.parameters())
        loaded[name] = {"files": files, "dtype": str(weights.dtype), "device": weights.device.type}
    work = {"data": hashlib.sha256(text.encode()).hexdigest(), "config": settings, "models": loaded}
    return Checkpoint(path, work)


def torch_random() -> dict[str, Any]:
    """torch's random states, for a checkpoint: the CPU's, and each GPU's (dropout there draws from them)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return {"torch_rng": torch.get_rng_state(), "cuda_rng": cuda}


def restore_torch_random(state: dict[str, Any]) -> None:
    """Puts back ``torch_random``'s states; the GPUs' only on as many GPUs as saved them."""
    torch.set_rng_state(state["torch_rng"])
    cuda = state.get("cuda_rng")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _plain(value: Any) -> Any:
    """JSON for the rows and pairs of a training: a dataclass as its fields."""
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else str(value)


class Resume:
    """Where an epoch-based training is, saved through a ``Checkpoint`` and restored from it.

    The trainer loops ``for epoch in resume.epochs(n)``, draws the epoch's batches from its ``rng`` (and
    nothing else that changes between epochs), and loops ``for batch in resume.batches(batches)``. Every
    ``every`` steps and after every epoch but the last, the trainable weights, the optimizer (and
    schedule), the random state the epoch's batches were drawn from, the batches done and ``kept`` (the
    trainer's own: best epoch, history) are saved. A run of the same work then goes on from there, to the
    weights an uninterrupted run trains. Without a checkpoint nothing is saved.
    """

    def __init__(
        self, checkpoint: Checkpoint | None, *, every: int, kept: Callable[[], dict[str, Any]] = dict
    ) -> None:
        """``kept()`` makes the trainer's own state for a fresh start; a resumed run has it back instead."""
        self.checkpoint, self.every = checkpoint, every
        self._saved = checkpoint.load() if checkpoint is not None else None
        self.kept: dict[str, Any] = self._saved["kept"] if self._saved is not None else kept()
        self.resumed_at: int | None = self._saved["step"] if self._saved is not None else None
        self.epoch = self.batch = self.step = 0
        self._started = time.perf_counter()
        self._parts: tuple[Any, Any, random.Random, Any] | None = None
        self._epoch_rng: Any = None

    def start(self, model: Any, optimizer: Any, rng: random.Random, schedule: Any = None) -> None:
        """Names what is saved (``model``'s trainable weights) and restores it from the checkpoint."""
        self._parts = (model, optimizer, rng, schedule)
        saved = self._saved
        if saved is None:
            return
        restore_trainable(model, saved["trainable"])
        optimizer.load_state_dict(saved["optimizer"])
        if schedule is not None:
            schedule.load_state_dict(saved["schedule"])
        rng.setstate(saved["rng"])
        restore_torch_random(saved)
        self.epoch, self.batch, self.step = saved["epoch"], saved["batch"], saved["step"]
        self._started -= saved["seconds"]  # the training time before the kill counts too

    def epochs(self, total: int) -> Iterator[int]:
        """The epochs left of ``total``; after each but the last, a checkpoint."""
        rng = self._require()[2]
        for epoch in range(self.epoch, total):
            self.epoch, self._epoch_rng = epoch, rng.getstate()
            yield epoch
            self.epoch, self.batch = epoch + 1, 0
            if epoch + 1 < total:
                self._save(rng.getstate())  # the next epoch's batches are drawn from here

    def batches(self, batches: Sequence[T]) -> Iterator[T]:
        """This epoch's batches not done yet; ``step`` counts them, and every ``every``-th is followed by a
        checkpoint (unless it ends the epoch, which ``epochs`` saves after)."""
        for index in range(self.batch, len(batches)):
            yield batches[index]
            self.step, self.batch = self.step + 1, index + 1
            if self.step % self.every == 0 and index + 1 < len(batches):
                self._save(self._epoch_rng)

    def seconds(self) -> float:
        """Training time so far, the time before a kill included."""
        return time.perf_counter() - self._started

    def _require(self) -> tuple[Any, Any, random.Random, Any]:
        if self._parts is None:
            raise RuntimeError("Resume.start must name the model, optimizer and rng first")
        return self._parts

    def _save(self, rng_state: Any) -> None:
        if self.checkpoint is None:
            return
        model, optimizer, _, schedule = self._require()
        state = {
            "trainable": snapshot_trainable(model, copy=False),  # written before the next step
            "optimizer": optimizer.state_dict(),
            **({"schedule": schedule.state_dict()} if schedule is not None else {}),
            "rng": rng_state,
            **torch_random(),
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "seconds": self.seconds(),
            "kept": self.kept,
        }
        self.checkpoint.save(state)
