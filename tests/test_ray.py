"""Ray scale-out on a local 2-CPU cluster: a worker that dies mid-run loses no problem, results equal
the single-process run, and finished chunks stream to disk and resume. One run covers all three:
every Ray run starts actors that import torch, the slow part of these tests."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from alphallm.chunks import ChunkStore, plan_chunks
from alphallm.cli import main
from alphallm.distributed import RayConfig, solve_on_ray
from alphallm.distributed.runner import _work
from alphallm.errors import UserError
from alphallm.search import MCTSConfig
from alphallm.solve import SolveConfig, SolveReport, solve
from alphallm.tasks import get_task

ray = pytest.importorskip("ray")

MODEL = "arith-base"
# Small batches so that 4 problems make 2 chunks, one per worker; a real (if tiny) search with
# rollouts, so the equality below covers every random draw the search makes.
CONFIG = SolveConfig(method="mcts", batch_size=2, rollouts=1, mcts=MCTSConfig(num_simulations=3), seed=7)
TWO_WORKERS = RayConfig(enabled=True, workers=2)


@pytest.fixture(scope="module")
def cluster() -> Any:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def task() -> Any:
    return get_task("arith")


@pytest.fixture(scope="module")
def problems(task: Any) -> list[Any]:
    return task.problems("test")[:4]


@pytest.fixture(scope="module")
def single(task: Any, problems: list[Any]) -> SolveReport:
    """The reference: one process, one model, every batch in turn."""
    import torch

    from alphallm.lm import load_lm

    torch.set_num_threads(1)
    return solve(task, problems, policy=load_lm(MODEL, device="cpu"), config=CONFIG, keep_trees=True)


def _rows(report: SolveReport) -> list[dict[str, Any]]:
    """Results as JSON sees them (tuples become lists), trees included."""
    rows: list[dict[str, Any]] = json.loads(json.dumps([asdict(r) for r in report.results], default=str))
    return rows


def test_two_workers_one_crashing_equal_one_process_and_the_cli_resumes_from_disk(
    cluster: Any,
    task: Any,
    problems: list[Any],
    single: SolveReport,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chunks = tmp_path / "ray.json.chunks"
    marker = tmp_path / "crashed"
    report = solve_on_ray(
        task,
        problems,
        model=MODEL,
        config=CONFIG,
        ray_config=TWO_WORKERS,
        out_dir=chunks,
        keep_trees=True,
        crash_once=(1, str(marker)),  # the worker that starts chunk 1 exits without a word
    )
    assert marker.exists()  # a worker died mid-run, and yet:
    assert _rows(report) == _rows(single)
    assert report.usage == single.usage  # no prompt is shared across batches, so KV reuse is the same
    assert sorted(path.name for path in chunks.glob("chunk-*.json")) == [
        "chunk-00000.json",
        "chunk-00001.json",
    ]

    # Other work (here: no trees kept) does not take those chunks.
    work = _work(task, problems, MODEL, None, CONFIG, True, None)
    first = plan_chunks(len(problems), batch_size=2, chunk_batches=1)[0]
    assert ChunkStore(chunks, work).load(first, problems[:2]) is not None
    assert ChunkStore(chunks, {**work, "keep_trees": False}).load(first, problems[:2]) is None

    # The same search from the CLI takes every finished chunk from <out>.chunks/ and solves only
    # the one whose file was lost; the chunks go once the results are written.
    (chunks / "chunk-00001.json").unlink()
    saves: list[int] = []
    real_save = ChunkStore.save

    def save(store: ChunkStore, chunk: Any, *rest: Any) -> dict[str, Any]:
        saves.append(chunk.index)
        return real_save(store, chunk, *rest)

    monkeypatch.setattr(ChunkStore, "save", save)
    args = ["search", "--task", "arith", "--limit", str(len(problems)), "--simulations", "3"]
    args += ["--rollouts", "1", "--batch-size", "2", "--seed", "7", "--device", "cpu"]
    args += ["--save-trees", str(tmp_path / "trees"), "--out", str(tmp_path / "ray.json")]
    assert main([*args, "--ray", "--ray-workers", "2"]) == 0
    assert saves == [1]
    assert not chunks.exists()
    saved = json.loads((tmp_path / "ray.json").read_text())["results"]
    assert saved == [{k: v for k, v in row.items() if k != "tree"} for row in _rows(single)]


def test_a_model_the_workers_cannot_load_is_one_line_not_every_worker_dying(
    cluster: Any, task: Any, problems: list[Any], tmp_path: Path
) -> None:
    broken = tmp_path / "broken"  # a config.json, so the driver's name check passes; no weights, no tokenizer
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(UserError, match=r"^ray worker: .*broken: could not load model"):
        solve_on_ray(
            task, problems, model=str(broken), config=CONFIG, ray_config=TWO_WORKERS, out_dir=tmp_path / "c"
        )


def test_chunks_are_whole_batches_and_bad_settings_are_one_line() -> None:
    assert [(c.start, c.stop) for c in plan_chunks(7, batch_size=2, chunk_batches=2)] == [(0, 4), (4, 7)]
    with pytest.raises(ValueError, match="workers"):
        RayConfig(workers=0)
    with pytest.raises(ValueError, match="offset"):
        solve(get_task("arith"), [], policy=None, config=CONFIG, offset=1)  # type: ignore[arg-type]
    assert main(["search", "--task", "arith", "--ray-workers", "2"]) == 2  # needs --ray
    with pytest.raises(UserError, match="no such model"):
        solve_on_ray(
            get_task("arith"), [], model="nope", config=CONFIG, ray_config=TWO_WORKERS, out_dir="unused"
        )


def test_an_address_where_nothing_answers_is_one_line_not_a_minute_of_retries() -> None:
    import socket

    from alphallm.distributed.runner import _check_reachable
    from alphallm.errors import UserError

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UserError, match=rf"ray: cannot join '127.0.0.1:{port}' \(nothing answers there"):
        _check_reachable(f"127.0.0.1:{port}")
    _check_reachable("auto")  # ray.init's own address forms are left to it
