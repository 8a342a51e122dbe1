"""The Ray actor: one model replica that solves chunks of problems with ``solve``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alphallm.chunks import chunk_payload
from alphallm.solve import solve
from alphallm.solve_config import SolveConfig
from alphallm.tasks.base import Problem, Task

__all__ = ["SolveWorker"]


class SolveWorker:
    """Holds the policy (and rollout model) on its device and solves one chunk per call.

    Wrapped by ``ray.remote`` in the runner; plain Python here, so it can be tested without Ray.

    Args:
        task: the task (pickled to the actor as it is, so custom tasks work too).
        model: policy model name or directory; ``rollout_model`` likewise, or None.
        device: ``None``/``auto``: the GPU Ray assigned to the actor when ``gpus`` > 0, else the CPU
            (never a GPU the actor did not reserve). ``dtype``: as ``load_lm`` (auto: fp32 on CPU).
        threads: torch CPU threads; one per reserved CPU, or actors sharing a machine thrash.
        crash_once: a test hook ``(chunk index, marker file)``: the first actor to start that chunk
            exits its process abruptly (as a killed or OOM-ed worker would), once per marker file.
    """

    def __init__(
        self,
        task: Task,
        model: str,
        *,
        rollout_model: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        threads: int = 1,
        gpus: float = 0.0,
        crash_once: tuple[int, str] | None = None,
    ) -> None:
        import torch

        from alphallm.lm import load_lm

        torch.set_num_threads(max(1, threads))
        if device in (None, "auto"):
            device = "cuda" if gpus > 0 else "cpu"
        self.task = task
        self.device = device
        self.policy = load_lm(model, device=device, dtype=dtype)
        self.rollout_lm = load_lm(rollout_model, device=device, dtype=dtype) if rollout_model else None
        self.crash_once = crash_once

    def ready(self) -> bool:
        """Answers once the actor (and its model) is up."""
        return True

    def solve_chunk(
        self, index: int, problems: Sequence[Problem], config: SolveConfig, offset: int, keep_trees: bool
    ) -> dict[str, Any]:
        """Solves problems ``[offset, offset + len(problems))`` of the whole set; plain data back."""
        if self.crash_once is not None and self.crash_once[0] == index:
            marker = Path(self.crash_once[1])
            if not marker.exists():
                marker.write_text(f"crashed on chunk {index}\n")
                os._exit(1)  # no cleanup, no exception: what a killed process looks like to Ray
        report = solve(
            self.task,
            problems,
            policy=self.policy,
            config=config,
            rollout_lm=self.rollout_lm,
            keep_trees=keep_trees,
            device=self.device,
            offset=offset,
        )
        return {**chunk_payload(report), "pid": os.getpid()}
