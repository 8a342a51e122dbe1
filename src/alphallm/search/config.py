"""Configuration of eta-MCTS: every part of the paper, each switchable for ablations."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["MCTSConfig"]

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
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown search setting(s): {', '.join(unknown)}")
        return cls(**data)
