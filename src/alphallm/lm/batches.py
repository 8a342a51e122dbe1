"""How a sampling call's rows are cut into batches: the ``n`` samples of each state, at most ``max_rows``
rows decoded at once. A state's samples stay together where they fit (its prompt is encoded once and its
KV cache repeated for them); a state asked for more than a batch holds is cut into pieces, so that one
request for n=100000 decodes a batch at a time instead of holding every row in memory at once."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["sample_batches"]


def sample_batches(counts: Sequence[int], max_rows: int) -> list[list[tuple[int, int]]]:
    """Batches of (state index, samples) in state order, each batch at most ``max_rows`` samples."""
    pieces = [
        (i, min(max_rows, count - done))
        for i, count in enumerate(counts)
        for done in range(0, count, max_rows)
    ]
    batches: list[list[tuple[int, int]]] = []
    rows = max_rows  # the first piece opens a batch
    for piece in pieces:
        if rows + piece[1] > max_rows:
            batches.append([])
            rows = 0
        batches[-1].append(piece)
        rows += piece[1]
    return batches
