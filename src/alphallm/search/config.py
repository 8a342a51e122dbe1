"""Configuration of eta-MCTS: every part of the paper, each switchable for ablations."""

from __future__ import annotations

import difflib
import math
import numbers
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

__all__ = ["MCTSConfig", "check_field_types", "type_problem", "unknown_keys"]

SELECTIONS = ("uct", "puct")
MERGE_MODES = ("off", "resample", "merge")


@dataclass(frozen=True)
class MCTSConfig:
    """eta-MCTS settings (AlphaLLM §4.3; defaults follow the paper where it applies to [0, 1] values)."""

    num_simulations: int = field(
        default=32, metadata={"help": "simulations per problem (new nodes + terminal revisits)"}
    )
    selection: str = field(default="uct", metadata={"help": "uct (the paper) or puct (policy prior)"})
    c_uct: float = field(default=1.0, metadata={"help": "exploration constant c of UCT / PUCT"})
    adaptive_branching: bool = field(default=True, metadata={"help": "widen nodes by importance I(s)"})
    alpha: float = field(default=8.0, metadata={"help": "widening rate: n(s) grows by floor(alpha * I(s))"})
    importance: str = field(
        default="value", metadata={"help": "children valued by their own value (the paper) or backed-up q"}
    )
    evaluate_root: bool = field(default=True, metadata={"help": "evaluate the root (defines I(root))"})
    c_min_root: int = field(default=4, metadata={"help": "least children of the root"})
    c_max_root: int = field(default=12, metadata={"help": "most children of the root"})
    c_min: int = field(default=2, metadata={"help": "least children of an inner node"})
    c_max: int = field(default=6, metadata={"help": "most children of an inner node"})
    fixed_width: int = field(default=3, metadata={"help": "children per node when adaptive branching is off"})
    merge: str = field(
        default="resample", metadata={"help": "state merge: off, resample (the code) or merge"}
    )
    merge_threshold: float = field(
        default=0.9, metadata={"help": "normalised similarity at which options merge"}
    )
    merge_retries: int = field(default=2, metadata={"help": "re-samples of a too-similar option"})
    drop_twins: bool = field(
        default=False,
        metadata={
            "help": "drop an option that still repeats a sibling's text exactly after the re-samples, "
            "and give its node no more children (false keeps the twin, as the code does)"
        },
    )
    virtual_loss: float = field(
        default=1.0, metadata={"help": "visits added to a path while a wave is pending"}
    )
    leaves_per_wave: int = field(default=4, metadata={"help": "expansions one tree may put in a wave"})
    max_depth: int = field(default=12, metadata={"help": "options per solution; deeper nodes are terminal"})
    greedy_first_child: bool = field(
        default=True, metadata={"help": "decode each node's first child greedily"}
    )

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.num_simulations < 1:
            raise ValueError("num_simulations must be at least 1")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}")
        if self.importance not in ("q", "value"):
            raise ValueError("importance must be 'q' or 'value'")
        if self.merge not in MERGE_MODES:
            raise ValueError(f"merge must be one of {MERGE_MODES}")
        if not 1 <= self.c_min_root <= self.c_max_root or not 1 <= self.c_min <= self.c_max:
            raise ValueError("need 1 <= c_min <= c_max for the root and inner nodes")
        if self.fixed_width < 1 or self.leaves_per_wave < 1 or self.max_depth < 1:
            raise ValueError("fixed_width, leaves_per_wave and max_depth must be at least 1")
        if not 0.0 < self.merge_threshold <= 1.0:
            raise ValueError("merge_threshold must lie in (0, 1]")
        if self.c_uct < 0 or self.alpha < 0 or self.virtual_loss < 0 or self.merge_retries < 0:
            raise ValueError("c_uct, alpha, virtual_loss and merge_retries must be non-negative")

    @property
    def max_children(self) -> int:
        """K, the children slots per node."""
        if not self.adaptive_branching:
            return self.fixed_width
        return max(self.c_max_root, self.c_max)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MCTSConfig:
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a mapping of search settings, not {data!r}")
        unknown = unknown_keys(data, cls)
        if unknown:
            raise ValueError(f"unknown search setting(s): {unknown}")
        return cls(**data)


def unknown_keys(data: Mapping[Any, Any], cls: Any) -> str:
    """The keys of ``data`` that name no field of the config dataclass ``cls``, each with the field it
    most looks like (``epocs (did you mean 'epochs'?)``), or "" when every key is a field."""
    names = [f.name for f in fields(cls)]
    unknown = sorted(str(key) for key in data if key not in names)
    return ", ".join(key + _did_you_mean(key, names) for key in unknown)


def _did_you_mean(key: str, names: list[str]) -> str:
    close = difflib.get_close_matches(key, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_field_types(config: Any) -> None:
    """ValueError naming the first field of a config dataclass whose value is not of its annotated
    type. YAML hands over whatever was written: ``prune: "no"`` would read as true, and a float
    simulation count would only fail deep inside numpy."""
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        problem = type_problem(getattr(config, f.name), hints[f.name], f.name)
        if problem:
            raise ValueError(problem)


def type_problem(value: Any, hint: Any, where: str) -> str | None:
    """``"<where>: expected <type>, not <value>"`` when ``value`` does not fit the annotation ``hint``
    (bool, int, float, str, ``X | None``, ``list[X]``, ``dict[K, V]``, a dataclass, Any); None when it
    fits. Ints must not be bools or floats; floats are finite numbers (an int is a float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        problems = [type_problem(value, option, where) for option in options]
        if all(problems):
            nullable = " or null" if len(options) < len(args) else ""
            return f"{where}: expected {' or '.join(_describe(o) for o in options)}{nullable}, not {value!r}"
        return None
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return f"{where}: expected a list, not {value!r}"
        return (
            _first(type_problem(item, args[0], f"{where}[{i}]") for i, item in enumerate(value))
            if args
            else None
        )
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            return f"{where}: expected a mapping, not {value!r}"
        if not args:
            return None
        keys = (type_problem(key, args[0], f"{where}: key {key!r}") for key in value)
        values = (type_problem(item, args[1], f"{where}.{key}") for key, item in value.items())
        return _first(keys) or _first(values)
    if _fits(value, hint):
        return None
    return f"{where}: expected {_describe(hint)}, not {value!r}"


def _fits(value: Any, hint: Any) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:  # numpy's integers are Integral too; a bool is not a count
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and is_dataclass(hint):
        return isinstance(value, hint)
    return True  # Any, and annotations no config uses


def _describe(hint: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    if typing.get_origin(hint) in (list, tuple):
        return "a list"
    if typing.get_origin(hint) is dict or (isinstance(hint, type) and is_dataclass(hint)):
        return "a mapping"
    return names.get(hint, str(hint))


def _first(problems: typing.Iterable[str | None]) -> str | None:
    return next((p for p in problems if p), None)
