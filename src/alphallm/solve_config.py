"""How to search: ``SolveConfig``, the settings of one method's search with its critics and budgets
(``solve.py`` runs it). Loop configs, search YAML files and the resume chunks' fingerprints all
read and write it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from alphallm.critics.critic_meta import KINDS
from alphallm.search import MCTSConfig
from alphallm.search.config import check_field_types, unknown_keys
from alphallm.search.readout import READOUTS

__all__ = ["CRITIC_NAMES", "METHODS", "PRUNING_CRITICS", "SolveConfig"]

METHODS = ("mcts", "greedy", "sc", "bon", "beam", "bfs")
PRUNING_CRITICS = ("tool", *KINDS, "implicit_q")
# Every name a weight may have: the critics ``_build_critics`` makes, and the rollouts.
CRITIC_NAMES = ("tool", "rollout", "oracle", "implicit_q", "consistency", *KINDS)
# Settings added after searches were saved. ``SolveConfig.to_dict`` leaves them out while at their
# defaults, so that the chunks a search saved before they existed still match its fingerprint
# (chunks.py) and a resumed run keeps them.
LATER_SETTINGS = (
    ("compare_readouts",),
    ("mcts", "drop_twins"),
    ("consistency_samples",),
    ("consistency_temperature",),
)


@dataclass(frozen=True)
class SolveConfig:
    """How to search. Budgets: ``mcts.num_simulations`` (mcts), ``samples`` (sc, bon),
    ``beam_width`` x ``expansions`` (beam), ``bfs_budget`` x ``expansions`` (bfs)."""

    method: str = field(default="mcts", metadata={"help": "mcts, greedy, sc, bon, beam or bfs"})
    samples: int = field(default=8, metadata={"help": "solutions per problem for sc and bon"})
    beam_width: int = field(default=3, metadata={"help": "open nodes kept per step (beam)"})
    expansions: int = field(default=3, metadata={"help": "children per expanded node (beam, bfs)"})
    bfs_budget: int = field(default=12, metadata={"help": "expansions per problem (bfs)"})
    temperature: float = field(default=1.0, metadata={"help": "policy sampling temperature"})
    rollouts: int = field(default=2, metadata={"help": "fast rollouts per new node (0: none)"})
    rollout_temperature: float = field(
        default=1.0, metadata={"help": "rollout temperature (0: one greedy rollout)"}
    )
    weights: dict[str, float] = field(
        default_factory=lambda: {"tool": 1.0, "rollout": 1.0},
        metadata={
            "help": "critic weights, each at least 0: tool, rollout, oracle (gold; training only), "
            "implicit_q, consistency, value, prm, orm"
        },
    )
    readout: str = field(
        default="best_value", metadata={"help": "mcts read-out: best_value, most_visited, vote or auto"}
    )
    compare_readouts: list[str] = field(
        default_factory=list,
        metadata={
            "help": "other read-outs scored on the same trees (no extra search): each problem records "
            "whether each would have been right, and the summary their accuracies"
        },
    )
    prune: bool = field(default=True, metadata={"help": "a step the pruning critic rejects is a dead end"})
    prune_with: str = field(
        default="tool",
        metadata={
            "help": "the pruning critic: tool (the exact verifier) or a learned critic (prm, value) "
            "with a weight, a soft verifier for when no tool exists"
        },
    )
    prune_below: float = field(
        default=0.0,
        metadata={"help": "a step is rejected when the pruning critic scores it at most this (tool: 0)"},
    )
    reachability: bool = field(
        default=True,
        metadata={
            "help": "the tool verifier also rejects a state the task can no longer solve (game24: the "
            "numbers left cannot make 24; an exact solver check, the way Tree of Thoughts asks its "
            "model 'can these reach 24?'); false: legality only"
        },
    )
    critic_dirs: dict[str, str] = field(
        default_factory=dict, metadata={"help": "learned critics by kind: {value: DIR, prm: DIR, orm: DIR}"}
    )
    anchor: str | None = field(
        default=None, metadata={"help": "anchor model of the implicit-Q critic (weight 'implicit_q')"}
    )
    consistency_samples: int = field(
        default=8,
        metadata={
            "help": "solutions the policy samples per problem for the consistency critic (weight "
            "'consistency': a complete solution scores the share of them reaching its answer)"
        },
    )
    consistency_temperature: float = field(
        default=0.7, metadata={"help": "the consistency critic's sampling temperature (above 0)"}
    )
    max_tokens: int | None = field(
        default=None,
        metadata={
            "help": "tokens a rollout, or the read-out's completion of an unfinished path, may generate "
            "(null: the task's limit, game24's 200; a policy that retries in its output, "
            "learn.retry_mix, writes about twice as much)"
        },
    )
    mcts: MCTSConfig = field(default_factory=MCTSConfig)
    batch_size: int = field(default=32, metadata={"help": "problems searched together"})
    seed: int = field(default=0, metadata={"help": "seed of the search and of sampling"})

    def __post_init__(self) -> None:
        check_field_types(self)
        self._check_critics()
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}")
        for readout in (self.readout, *self.compare_readouts):
            if readout not in READOUTS:
                raise ValueError(f"readout must be one of {', '.join(READOUTS)}, not {readout!r}")
        counts = ("samples", "beam_width", "expansions", "bfs_budget", "batch_size", "consistency_samples")
        for name in counts:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.rollouts < 0 or self.temperature < 0 or self.rollout_temperature < 0:
            raise ValueError("rollouts, temperature and rollout_temperature must be non-negative")
        if self.seed < 0:  # numpy's generators take no negative seed
            raise ValueError(f"seed must be at least 0, not {self.seed}")
        if self.consistency_temperature <= 0:
            raise ValueError("consistency_temperature must be above 0 (the consistency critic samples)")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1 (null: the task's limit)")
        if self.prune_with not in PRUNING_CRITICS:
            raise ValueError(f"prune_with must be one of {', '.join(PRUNING_CRITICS)}")
        if not 0.0 <= self.prune_below < 1.0:
            raise ValueError("prune_below must lie in [0, 1)")
        # A pruning critic the search does not run would silently prune nothing.
        name = self.prune_with
        if (
            self.prune
            and name != "tool"
            and (self.weights.get(name, 0.0) <= 0 or (name in KINDS and name not in self.critic_dirs))
        ):
            raise ValueError(
                f"prune_with: {name} needs that critic (--critic {name}=DIR) with a weight above 0"
            )

    def _check_critics(self) -> None:
        """Weights and critic directories by names the search knows: a misspelt name would
        otherwise be a critic that silently never runs."""
        for kind in self.critic_dirs:
            if kind not in KINDS:
                raise ValueError(f"critic_dirs: unknown critic kind {kind!r} ({', '.join(KINDS)})")
        for name, weight in self.weights.items():
            if name not in CRITIC_NAMES:
                raise ValueError(f"weights: unknown critic {name!r} ({', '.join(CRITIC_NAMES)})")
            if weight < 0:
                raise ValueError(f"weights.{name}: must be at least 0, not {weight!r}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for *parents, name in LATER_SETTINGS:
            holder = data
            for key in parents:
                holder = holder[key]
            if holder[name] == _default(*parents, name):
                del holder[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SolveConfig:
        """From plain data (a YAML file): unknown keys and invalid values raise ValueError."""
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a mapping of search settings, not {data!r}")
        data = dict(data)
        mcts = data.pop("mcts", None)
        if mcts is not None and not isinstance(mcts, Mapping):
            raise ValueError(f"mcts: expected a mapping, not {mcts!r}")
        try:
            mcts_config = MCTSConfig.from_dict(dict(mcts or {}))
        except ValueError as exc:
            raise ValueError(f"mcts: {exc}") from None
        unknown = unknown_keys(data, cls)
        if unknown:
            raise ValueError(f"unknown search setting(s): {unknown}")
        return cls(**data, mcts=mcts_config)


def _default(*path: str) -> Any:
    """The default of the setting at ``path`` (``("mcts", "drop_twins")``)."""
    holder: Any = SolveConfig()
    for key in path:
        holder = getattr(holder, key)
    return holder
