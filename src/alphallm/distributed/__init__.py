"""Ray scale-out: ``solve`` sharded over actors that each hold a model replica (CPU or GPU), with
results streamed to disk per chunk, crashed workers' chunks retried, and results equal to the
single-process run for the same seed. Ray itself is imported only when a run starts."""

from __future__ import annotations

from alphallm.distributed.config import RayConfig
from alphallm.distributed.runner import ray_session, solve_in_chunks, solve_on_ray

__all__ = ["RayConfig", "ray_session", "solve_in_chunks", "solve_on_ray"]
