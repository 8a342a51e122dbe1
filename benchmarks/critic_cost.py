"""What a round's critic stage costs once the trees have grown, and what the held-out cap
(``critics.train.max_held_out_rows``) changes. Round K's critic stage of a finished run is replayed in a
scratch copy of the run (its trees, seeds and settings; the run itself is not touched), once per cap:

    python benchmarks/critic_cost.py --run runs/bench-improve-49839c0/game24-sft_only --round 5 --caps 0 5000

Cap 0 scores every held-out row, as the loop did before the cap. Training rows (``max_rows``) and their
order do not depend on the cap, so a capped critic differs from the uncapped one only if early stopping
picks another epoch; the table says whether each critic's weights came out identical to the uncapped
replay's (when cap 0 is among ``--caps``), and what the critic gate decided. Prints a table and writes
``critic_cost-<run>-round<K>.json``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from _sweep import finished_round, run_parser

from alphallm.critics.learned import files_digest
from alphallm.io import write_json
from alphallm.loop import Loop
from alphallm.loop_critics import critics_stage


def scratch_copy(run: Path, k: int, work: Path) -> Path:
    """The run's settings and rounds 0..k (trees, policies, earlier critics) under ``work``."""
    target = work / run.name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for path in run.iterdir():
        if path.is_file():
            shutil.copy2(path, target / path.name)
    for j in range(k + 1):
        shutil.copytree(run / f"round-{j}", target / f"round-{j}")
    (target / f"round-{k}" / "critics.json").unlink()
    return target


def weights_digest(directory: Path) -> str:
    """A digest of a saved critic's weight files, its head's and its backbone's (equal: the same critic)."""
    return files_digest(sorted(directory.rglob("*.safetensors")))


def replay(scratch: Path, k: int, cap: int | None) -> dict[str, Any]:
    """Round k's critic stage in ``scratch`` with held-out cap ``cap``: its record, seconds and digests."""
    loop = Loop.open(scratch)
    critics = loop.config.critics
    loop = Loop(
        replace(loop.config, critics=replace(critics, train=replace(critics.train, max_held_out_rows=cap)))
    )
    started = time.perf_counter()
    record = critics_stage(loop, k)
    seconds = time.perf_counter() - started
    digests = {kind: weights_digest(loop.critic_dir(k, kind)) for kind in record.get("trained", [])}
    return {"cap": cap, "seconds": round(seconds, 1), "record": record, "digests": digests}


def kept_epoch(metrics: dict[str, Any]) -> int:
    """The epoch early stopping kept: the lowest held-out loss (the first of equals, as train_critic)."""
    history = metrics["history"]
    return min(range(len(history)), key=lambda i: history[i]["held_out_loss"])


def table(original: dict[str, Any], replays: list[dict[str, Any]]) -> str:
    kinds = [kind for kind in ("value", "prm", "orm") if kind in original]
    lines = [
        "| held-out cap | stage seconds | "
        + " | ".join(
            f"{kind}: held-out rows, epoch kept, gate rows, kept round, weights as uncapped" for kind in kinds
        )
        + " |",
        "|---|---|" + "---|" * len(kinds),
    ]

    uncapped = next((r["digests"] for r in replays if r["cap"] is None), None)

    def cells(record: dict[str, Any], digests: dict[str, str] | None) -> list[str]:
        out = []
        for kind in kinds:
            m = record[kind]
            gate = m.get("gate", {})
            same = "-"
            if digests is not None and uncapped is not None:
                same = "yes" if digests[kind] == uncapped[kind] else "no"
            rows = f"{m['held_out_rows']}, {kept_epoch(m)}, {gate.get('rows', '-')}"
            out.append(f"{rows}, {record['kept'][kind]}, {same}")
        return out

    lines.append(
        f"| the run's own stage (no cap) | {original['seconds']:.0f} | "
        + " | ".join(cells(original, None))
        + " |"
    )
    for r in replays:
        name = "none" if r["cap"] is None else str(r["cap"])
        lines.append(
            f"| {name} | {r['seconds']:.0f} | " + " | ".join(cells(r["record"], r["digests"])) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = run_parser(__doc__)
    parser.add_argument("--round", type=int, required=True, help="a finished round (k >= 1)")
    parser.add_argument(
        "--caps", type=int, nargs="+", default=[0, 5000], help="held-out row caps to replay (0: none)"
    )
    parser.add_argument("--work", default="runs/critic-cost", help="scratch directory for the run's copy")
    args = parser.parse_args(argv)
    run, k = Path(args.run), args.round
    finished_round(run, k)
    original = json.loads((run / f"round-{k}" / "critics.json").read_text())
    scratch = scratch_copy(run, k, Path(args.work))
    out = Path(args.out) / f"critic_cost-{run.name}-round{k}.json"
    replays: list[dict[str, Any]] = []
    for cap in args.caps:
        replays.append(replay(scratch, k, cap or None))
        write_json(out, {"run": str(run), "round": k, "original": original, "replays": replays})
        print(f"cap {cap or 'none'}: {replays[-1]['seconds']:.0f} s", flush=True)
    print(f"\n{run.name}, round {k}'s critic stage replayed")
    print(table(original, replays))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
