"""eta-MCTS throughput against raw batched sampling of the same model and backend.

    python benchmarks/search_throughput.py [--task arith] [--problems 64] [--simulations 32]

Raw sampling decodes whole solutions for all problems in large batches: the ceiling for this
backend. eta-MCTS pays for tree bookkeeping, critics, smaller batches and line-by-line decoding.
Reports generated tokens per second of both, their ratio, and prefill tokens per generated token
(prefix reuse keeps a node's text from being re-encoded for its children and rollouts).
Prints a table and writes ``results/search_throughput-<task>.json`` (``-append-by-copy`` added with that
flag, the decoding before ``lm/kv_room.py``, for a comparison on one machine; ``-served`` with ``--served``,
the same model behind ``alphallm serve`` in this process and read over HTTP by ``lm/served.py``).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from alphallm.io import write_json
from alphallm.lm import load_lm
from alphallm.search import MCTSConfig
from alphallm.solve import SolveConfig, solve
from alphallm.tasks import get_task


def raw_sampling(lm: object, task: object, problems: list, samples: int, seed: int) -> dict:
    prompts = [task.format_prompt(p) for p in problems]  # type: ignore[attr-defined]
    before = lm.usage.copy()  # type: ignore[attr-defined]
    started = time.perf_counter()
    lm.sample(prompts, n=samples, temperature=0.8, max_tokens=task.max_solution_tokens, seed=seed)  # type: ignore[attr-defined]
    seconds = time.perf_counter() - started
    used = lm.usage.since(before)  # type: ignore[attr-defined]
    return {
        "generated_tokens": used.generated_tokens,
        "prefill_tokens": used.prefill_tokens,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="arith")
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--simulations", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4, help="raw sampling: solutions per problem")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument(
        "--append-by-copy",
        action="store_true",
        help="decode as before lm/kv_room.py (transformers' DynamicLayer copies the whole cache at every "
        "token), to compare on the same machine",
    )
    parser.add_argument(
        "--served",
        action="store_true",
        help="the model behind alphallm serve (a thread of this process), searched over HTTP",
    )
    args = parser.parse_args(argv)
    if args.append_by_copy:
        import alphallm.lm.kv_room

        alphallm.lm.kv_room.make_room = lambda cache, room: None  # type: ignore[assignment]
    task = get_task(args.task)
    problems = task.problems("test")[: args.problems]
    lm = load_lm(f"{args.task}-base")
    if args.served:
        from alphallm.lm.served import ServedLM
        from alphallm.lm.server import make_server

        server = make_server(lm, f"{args.task}-base", port=0)  # type: ignore[arg-type]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        lm = ServedLM(f"http://127.0.0.1:{server.server_address[1]}")
    raw_sampling(lm, task, problems[:4], 1, args.seed)  # warm-up
    raw = raw_sampling(lm, task, problems, args.samples, args.seed)
    config = replace(
        SolveConfig(method="mcts", batch_size=len(problems), seed=args.seed),
        mcts=MCTSConfig(num_simulations=args.simulations),
    )
    started = time.perf_counter()
    report = solve(task, problems, policy=lm, config=config)
    seconds = time.perf_counter() - started
    generated = report.generated_tokens
    prefill = sum(u["prefill_tokens"] for u in report.usage.values())
    rows = {
        "raw sampling tokens/s": raw["generated_tokens"] / raw["seconds"],
        "eta-MCTS tokens/s": generated / seconds,
        "eta-MCTS / raw": (generated / seconds) / (raw["generated_tokens"] / raw["seconds"]),
        "raw prefill per generated token": raw["prefill_tokens"] / raw["generated_tokens"],
        "eta-MCTS prefill per generated token": prefill / generated,
        "eta-MCTS generated tokens": generated,
        "eta-MCTS seconds": seconds,
        "eta-MCTS accuracy": report.accuracy,
    }
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        print(
            f"{key:{width}s}  {value:12.3f}" if isinstance(value, float) else f"{key:{width}s}  {value:12d}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "-append-by-copy" * args.append_by_copy + "-served" * args.served
    name = f"search_throughput-{args.task}{suffix}.json"
    write_json(out / name, {"args": vars(args), "raw": raw, **rows})
    print(f"\nwrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
