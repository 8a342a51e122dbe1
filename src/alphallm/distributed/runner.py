"""``solve`` sharded over Ray actors, streamed to disk chunk by chunk, resumable and crash-tolerant.

The driver keeps a queue of chunks and gives each idle actor one at a time, so fast actors take
more and a slow or restarting one holds back a single chunk. A finished chunk is saved at once
(``alphallm.chunks``); a chunk whose actor died (a crash, a kill, an OOM) goes back to the front of the
queue for the next idle actor, while Ray restarts the dead one (``max_restarts``). An error raised
by the search itself is not retried: it would fail again, so it is raised as it is.
``solve_in_chunks`` is the same streaming without Ray, in this process.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alphallm.chunks import Chunk, ChunkStore, chunk_payload, plan_chunks
from alphallm.distributed.config import RayConfig
from alphallm.distributed.worker import SolveWorker
from alphallm.errors import UserError, first_line
from alphallm.evaluation import check_prompts_fit
from alphallm.lm.base import LanguageModel
from alphallm.lm.loading import model_files, pick_device
from alphallm.solve import ProblemResult, SolveReport, solve
from alphallm.solve_config import SolveConfig
from alphallm.tasks.base import Problem, Task

__all__ = ["ray_session", "solve_in_chunks", "solve_on_ray"]

log = logging.getLogger(__name__)


@contextmanager
def ray_session(config: RayConfig) -> Iterator[None]:
    """Joins ``config.address`` or starts a local cluster, unless Ray is already up; shuts down
    only what it started, so the loop's stages can share one session."""
    import ray

    if ray.is_initialized():
        yield
        return
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    options["logging_level"] = logging.WARNING
    if config.address is None:
        # A local cluster offers every worker asked for, even beyond the cores (the user's call);
        # otherwise the extra actors would wait forever for a free CPU.
        options["num_cpus"] = max(os.cpu_count() or 1, int(config.workers * config.cpus_per_worker + 0.999))
    _check_reachable(config.address)
    try:
        ray.init(address=config.address, **options)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UserError(f"ray: cannot join {config.address!r} ({first_line(exc)})") from None
    try:
        yield
    finally:
        ray.shutdown()


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A ``host:port`` (or ``ray://host:port``) that takes no connection is a one-line error now:
    ``ray.init`` would retry it for a minute or more, printing raw connection logs."""
    if not address or address == "auto":
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # not host:port; ray.init judges it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(
            f"ray: cannot join {address!r} (nothing answers there: {exc.strerror or exc})"
        ) from None


def solve_on_ray(
    task: Task,
    problems: Sequence[Problem],
    *,
    model: str,
    config: SolveConfig,
    ray_config: RayConfig,
    out_dir: str | Path,
    rollout_model: str | None = None,
    keep_trees: bool = False,
    progress: Callable[[int], None] | None = None,
    device: str | None = None,
    dtype: str | None = None,
    crash_once: tuple[int, str] | None = None,
) -> SolveReport:
    """Like ``solve`` (same results for the same seed), with the problems sharded over
    ``ray_config.workers`` actors. Finished chunks stream into ``out_dir``; chunks already there
    from an interrupted run of the same work are taken as they are. ``crash_once``: see SolveWorker.
    """
    from alphallm.lm.loading import resolve_model_path
    from alphallm.lm.served import ServedLM, is_served

    for name in (model, rollout_model, config.anchor):  # a bad name is one line here, not a dead actor
        if name is not None:
            resolve_model_path(name)
            if is_served(name):
                ServedLM(name)  # the server answers and holds that model
    started = time.perf_counter()
    chunks = plan_chunks(len(problems), batch_size=config.batch_size, chunk_batches=ray_config.chunk_batches)
    store = ChunkStore(
        out_dir, _work(task, problems, model, rollout_model, config, keep_trees, dtype, device)
    )
    done: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        payload = store.load(chunk, problems[chunk.start : chunk.stop])
        if payload is not None:
            done[chunk.index] = payload
    if done:
        log.info("resuming: %d of %d chunks already in %s", len(done), len(chunks), out_dir)
        if progress is not None:
            progress(sum(chunk.size for chunk in chunks if chunk.index in done))
    todo = [chunk for chunk in chunks if chunk.index not in done]
    if todo:
        with ray_session(ray_config):
            actor_options = {
                "task": task,
                "model": model,
                "rollout_model": rollout_model,
                "device": device,
                "dtype": dtype,
                "crash_once": crash_once,
            }
            _run_chunks(todo, problems, config, ray_config, store, done, actor_options, keep_trees, progress)
    return _report(chunks, done, config, time.perf_counter() - started)


def solve_in_chunks(
    task: Task,
    problems: Sequence[Problem],
    *,
    model: str,
    policy: LanguageModel,
    config: SolveConfig,
    out_dir: str | Path,
    chunk_batches: int = 1,
    keep_trees: bool = False,
    progress: Callable[[int], None] | None = None,
    rollout_model: str | None = None,
    rollout_lm: LanguageModel | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> SolveReport:
    """``solve`` in this process, one chunk of whole batches at a time, each saved as it finishes, so
    that a killed hour-long search keeps its finished chunks. Same results as one ``solve`` call (each
    batch is seeded by its position) and the same chunk files as ``solve_on_ray`` with as many batches
    per chunk. ``model``, ``rollout_model`` and ``dtype`` name what ``policy`` and ``rollout_lm`` were
    loaded from, for the chunks' fingerprint."""
    check_prompts_fit(task, problems, policy)  # all of them, before the first chunk is searched
    started = time.perf_counter()
    chunks = plan_chunks(len(problems), batch_size=config.batch_size, chunk_batches=chunk_batches)
    store = ChunkStore(
        out_dir, _work(task, problems, model, rollout_model, config, keep_trees, dtype, device)
    )
    done: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        shard = list(problems[chunk.start : chunk.stop])
        payload = store.load(chunk, shard)
        if payload is None:
            report = solve(
                task,
                shard,
                policy=policy,
                config=config,
                rollout_lm=rollout_lm,
                keep_trees=keep_trees,
                progress=progress,
                device=device,
                offset=chunk.start,
            )
            payload = store.save(chunk, shard, chunk_payload(report))
        elif progress is not None:
            progress(chunk.size)
        done[chunk.index] = payload
    return _report(chunks, done, config, time.perf_counter() - started)


def _work(
    task: Task,
    problems: Sequence[Problem],
    model: str,
    rollout_model: str | None,
    config: SolveConfig,
    keep_trees: bool,
    dtype: str | None,
    device: str | None = None,
) -> dict[str, Any]:
    """What every chunk of a run shares; a saved chunk is reused only for the same work, done with the
    same models and critics: their files are part of it, so one retrained in place redoes the chunks.
    The device too (this process's view of ``auto``): a GPU's numbers are not a CPU's."""
    return {
        "device": pick_device(device).type,
        "task": task.name,
        "model": model,
        "rollout_model": rollout_model,
        "files": {name: model_files(path) for name, path in _inputs(model, rollout_model, config) if path},
        "config": config.to_dict(),
        "keep_trees": keep_trees,
        "dtype": None if dtype in (None, "auto") else dtype,  # auto is the default either way
        # The prompt as the task writes it: a chat template changes every state the search sees.
        "prompt": task.format_prompt(problems[0]) if problems else None,
    }


def _inputs(model: str, rollout_model: str | None, config: SolveConfig) -> list[tuple[str, str | None]]:
    """Every model and critic directory a search reads, by role; a LoRA critic's base too."""
    from alphallm.critics.critic_meta import lora_base

    bases = [(f"{kind}.lora_base", lora_base(path)) for kind, path in config.critic_dirs.items()]
    return [
        ("model", model),
        ("rollout_model", rollout_model),
        ("anchor", config.anchor),
        *config.critic_dirs.items(),
        *bases,
    ]


def _run_chunks(
    todo: list[Chunk],
    problems: Sequence[Problem],
    config: SolveConfig,
    ray_config: RayConfig,
    store: ChunkStore,
    done: dict[int, dict[str, Any]],
    actor_options: dict[str, Any],
    keep_trees: bool,
    progress: Callable[[int], None] | None,
) -> None:
    """Hands chunks to idle actors until every chunk is saved into ``done`` (and ``store``)."""
    import ray
    from ray.exceptions import ActorUnavailableError, RayError, RayTaskError

    _check_resources(ray_config)
    worker_cls: Any = ray.remote(SolveWorker).options(
        num_cpus=ray_config.cpus_per_worker,
        num_gpus=ray_config.gpus_per_worker,
        max_restarts=ray_config.max_restarts,
        max_task_retries=0,  # the driver re-queues a dead actor's chunk itself, to any idle actor
    )
    threads = max(1, int(ray_config.cpus_per_worker))
    count = min(ray_config.workers, len(todo))
    actors: list[Any] = [
        worker_cls.remote(threads=threads, gpus=ray_config.gpus_per_worker, **actor_options)
        for _ in range(count)
    ]
    idle: deque[Any] = deque(actors)
    queue: deque[Chunk] = deque(todo)
    attempts: Counter[int] = Counter()
    deaths: Counter[int] = Counter()  # by position in ``actors``
    running: dict[Any, tuple[Any, Chunk | None]] = {}  # chunk None: waiting for a restarted actor
    try:
        while queue or any(chunk is not None for _, chunk in running.values()):
            while queue and idle:
                free, next_chunk = idle.popleft(), queue.popleft()
                attempts[next_chunk.index] += 1
                shard = list(problems[next_chunk.start : next_chunk.stop])
                ref = free.solve_chunk.remote(next_chunk.index, shard, config, next_chunk.start, keep_trees)
                running[ref] = (free, next_chunk)
            if not running:
                raise RuntimeError(f"ray: every worker died; {len(queue)} chunk(s) left unsolved")
            (ref,), _ = ray.wait(list(running), num_returns=1)
            actor, chunk = running.pop(ref)
            try:
                payload = ray.get(ref)
            except RayTaskError as exc:  # the search raised: a retry would raise again
                raise exc.cause from None
            except ActorUnavailableError:  # restarting: the chunk goes to whoever is free first
                if chunk is not None:
                    attempts[chunk.index] -= 1  # no fault of the chunk's
                    queue.appendleft(chunk)
                time.sleep(0.2)
                running[_when_ready(actor)] = (actor, None)
                continue
            except RayError as exc:  # the actor died (a crash, a kill, an OOM)
                refused = _user_error(exc)
                if refused is not None:  # bad input (a model, a server): a restart would die of it again
                    raise UserError(f"ray worker: {refused}") from None
                if chunk is not None:
                    _check_attempts(chunk, attempts[chunk.index], ray_config.max_attempts, exc)
                    log.warning("ray: chunk %d lost with its worker; retrying it", chunk.index)
                    queue.appendleft(chunk)
                position = actors.index(actor)
                deaths[position] += 1
                # Ray restarts it (reloading the model); it takes work again once it answers.
                if deaths[position] <= ray_config.max_restarts:
                    running[_when_ready(actor)] = (actor, None)
                continue
            if chunk is not None:
                done[chunk.index] = store.save(chunk, problems[chunk.start : chunk.stop], payload)
                if progress is not None:
                    progress(chunk.size)
            idle.append(actor)
    finally:
        for actor in actors:  # free the CPUs/GPUs for the next stage's actors
            ray.kill(actor, no_restart=True)


def _user_error(exc: Exception) -> str | None:
    """The message of the ``UserError`` that killed an actor (Ray ends its report with the error's
    last line), or None for another death."""
    last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
    prefix = f"{UserError.__module__}.{UserError.__name__}: "
    return last.removeprefix(prefix) if last.startswith(prefix) else None


def _when_ready(actor: Any) -> Any:
    """A call that returns once the (restarting) actor is up; Ray holds it until then."""
    return actor.ready.options(max_task_retries=-1).remote()


def _check_attempts(chunk: Chunk, attempts: int, limit: int, exc: Exception) -> None:
    """A chunk that keeps killing its worker (say, out of memory) fails the run after ``limit`` tries."""
    if attempts >= limit:
        raise RuntimeError(
            f"ray: chunk {chunk.index} (problems {chunk.start}-{chunk.stop - 1}) failed {attempts} "
            f"times; last: {first_line(exc)}"
        ) from None


def _check_resources(ray_config: RayConfig) -> None:
    """A cluster too small for the workers asked for would leave actors pending forever."""
    import ray

    available = ray.cluster_resources()
    need = {
        "CPU": ray_config.workers * ray_config.cpus_per_worker,
        "GPU": ray_config.workers * ray_config.gpus_per_worker,
    }
    short = [f"{need[k]:g} {k}s (has {available.get(k, 0):g})" for k in need if need[k] > available.get(k, 0)]
    if short:
        raise UserError(f"ray: {ray_config.workers} workers need {', '.join(short)}")


def _report(
    chunks: list[Chunk], done: dict[int, dict[str, Any]], config: SolveConfig, seconds: float
) -> SolveReport:
    """One SolveReport over every chunk, in problem order; usage summed over chunks."""
    results: list[ProblemResult] = []
    usage: dict[str, dict[str, int]] = {}
    for chunk in chunks:
        payload = done[chunk.index]
        results.extend(ProblemResult(**row) for row in payload["results"])
        for model, counts in payload["usage"].items():
            total = usage.setdefault(model, {})
            for key, value in counts.items():
                total[key] = total.get(key, 0) + value
    return SolveReport(
        method=config.method, results=results, usage=usage, wall_seconds=seconds, config=config.to_dict()
    )
