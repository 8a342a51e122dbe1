"""Console helpers shared by the commands: tables, progress bars and JSONL run logs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from alphallm.errors import UserError
from alphallm.io import dumps

console = Console(stderr=False)


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Any]:
    """A rich progress bar on a terminal, else a plain line at every tenth; yields ``advance(k)``."""
    if not console.is_terminal:
        # A log file (nohup, a cluster job) gets nothing from a live bar until it ends: a 52-minute
        # pretrain left an empty log. Plain lines show how far it is and how fast it goes.
        yield _plain_progress(description, total)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task_id = progress.add_task(description, total=total)
        yield lambda k=1: progress.advance(task_id, k)


def _plain_progress(description: str, total: int) -> Callable[[int], None]:
    started, done, shown = time.monotonic(), 0, 0

    def advance(k: int = 1) -> None:
        nonlocal done, shown
        done += k
        tenth = 10 * done // max(1, total)
        if tenth > shown:
            shown = tenth
            elapsed = int(time.monotonic() - started)
            console.print(f"{description}: {done}/{total} ({elapsed // 60}:{elapsed % 60:02d} elapsed)")

    return advance


def print_table(title: str, rows: Mapping[str, Any]) -> None:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in rows.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)


def append_jsonl(path: str | Path, record: Mapping[str, Any]) -> None:
    """Appends one JSON line (a run log; each line is written whole, in one call)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(dumps(record) + "\n")
    except OSError as exc:
        raise UserError(f"{path}: cannot append the run log ({exc.strerror or exc})") from None
