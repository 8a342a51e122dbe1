"""Settings of the Ray runner; plain data, so configs and ``--help`` never import Ray."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RayConfig"]


@dataclass(frozen=True)
class RayConfig:
    """Where and how wide to run: ``enabled`` turns the runner on (``--ray``)."""

    enabled: bool = field(default=False, metadata={"help": "shard search over Ray actors"})
    address: str | None = field(
        default=None, metadata={"help": "cluster to join ('auto', 'HOST:PORT', 'ray://...'); none: start one"}
    )
    workers: int = field(default=2, metadata={"help": "actors, each holding its own model replica"})
    cpus_per_worker: float = field(
        default=1.0, metadata={"help": "CPUs reserved per actor (also its torch threads)"}
    )
    gpus_per_worker: float = field(default=0.0, metadata={"help": "GPUs per actor (fractions share one)"})
    chunk_batches: int = field(
        default=1, metadata={"help": "search batches per chunk (the unit of work, saving and retry)"}
    )
    max_restarts: int = field(
        default=3, metadata={"help": "restarts of a crashed actor before it is dropped"}
    )
    max_attempts: int = field(default=3, metadata={"help": "tries of one chunk before the run fails"})

    def __post_init__(self) -> None:
        if self.workers < 1 or self.chunk_batches < 1 or self.max_attempts < 1:
            raise ValueError("workers, chunk_batches and max_attempts must be at least 1")
        if self.cpus_per_worker < 0 or self.gpus_per_worker < 0 or self.max_restarts < 0:
            raise ValueError("cpus_per_worker, gpus_per_worker and max_restarts must be non-negative")
