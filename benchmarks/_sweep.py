"""What the benchmarks over a finished loop run share: their ``--run`` and ``--out`` arguments and
opening the run with a one-line error (``critic_gate``, ``gate_noise``, ``search_guard``), and for the
sweeps of one round (``dpo_sweep``, ``sft_sweep``) their arguments and the check that the round has
finished; and the results files that keep every run of a benchmark (``append_result``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from alphallm.errors import UserError
from alphallm.io import write_json
from alphallm.loop import Loop


def open_run(run: Path) -> Loop:
    """The loop of a run directory, or exit with its one-line error (not a loop run, a bad config)."""
    try:
        return Loop.open(run)
    except UserError as error:
        raise SystemExit(str(error)) from None


def run_parser(doc: str | None) -> argparse.ArgumentParser:
    """``--run`` (a loop run directory) and ``--out`` (where the JSON goes); a benchmark adds its own."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a loop run directory (with config.yaml)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    return parser


def sweep_parser(doc: str | None, variants: Iterable[str]) -> argparse.ArgumentParser:
    """``run_parser``'s, ``--round`` and ``--variants`` (all by default)."""
    names = list(variants)
    parser = run_parser(doc)
    parser.add_argument("--round", type=int, required=True, help="a finished round (k >= 1)")
    parser.add_argument("--variants", nargs="+", choices=names, default=names)
    return parser


def finished_round(run: Path, k: int) -> Loop:
    """The loop of ``run``, once its round ``k`` has passed its gate."""
    if not (run / f"round-{k}" / "gate.json").is_file():
        raise SystemExit(f"{run}: round {k} has not finished (no gate.json)")
    return open_run(run)


def append_result(out: str | Path, name: str, entry: dict[str, Any]) -> Path:
    """Adds ``entry`` to the list in ``out/name`` (atomically; earlier runs stay) and says where."""
    path = Path(out) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text()) if path.exists() else []
    write_json(path, [*previous, entry])
    print(f"wrote {path}")
    return path
