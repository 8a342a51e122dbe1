"""Flag value types shared by the commands."""

from __future__ import annotations

import argparse
import math

__all__ = ["finite_float"]


def finite_float(text: str) -> float:
    """A float flag's value: ``float`` also reads 'nan' and 'inf', which no setting means and which
    failed deep in torch (``--temperature nan``: a sampling traceback; ``--lr nan``: the optimizer's)
    or ran to nonsense (``--temperature inf``: uniform samples)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value
