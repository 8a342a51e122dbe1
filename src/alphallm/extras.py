"""alphallm's optional dependencies ("extras": ``train``, ``ray``, ``plot``), read from the package's
own metadata (``pyproject.toml``), so that a missing one is named with the line that installs it."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable

__all__ = ["install_hint", "missing_extra", "missing_modules"]


def missing_extra(module: str | None) -> str | None:
    """The extra that installs ``module`` (``peft`` -> ``train``, ``ray`` -> ``ray``, ``matplotlib`` ->
    ``plot``), or None for a module no extra provides."""
    from importlib import metadata

    top = (module or "").partition(".")[0].lower()
    try:
        requirements = metadata.requires("alphallm") or []
    except metadata.PackageNotFoundError:
        return None
    for requirement in requirements:
        name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("-", "_")
        extra = re.search(r"extra\s*==\s*[\"']([^\"']+)", requirement)
        if extra and name == top:
            return extra.group(1)
    return None


def missing_modules(modules: Iterable[str]) -> list[str]:
    """Those of ``modules`` that are not installed."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def install_hint(modules: Iterable[str]) -> str:
    """``pip install 'alphallm[train]'`` for the extras that install ``modules``; "" if none does."""
    extras = sorted({extra for name in modules if (extra := missing_extra(name))})
    return f"pip install 'alphallm[{','.join(extras)}]'" if extras else ""
