"""The configuration of ``alphallm improve``: typed dataclasses, read from YAML and validated.

A YAML file mirrors ``LoopConfig``: top-level fields plus one section per stage (``imagine``,
``search``, ``learn``, ``critics``, ``evaluate``). Unknown keys and invalid values are one-line
errors that name the key.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from alphallm.distributed.config import RayConfig
from alphallm.errors import UserError
from alphallm.loop_checks import (
    check_difficulty,
    check_installed,
    check_stage_seeds,
    check_train_dtype,
    check_trainer,
)
from alphallm.search.config import type_problem, unknown_keys
from alphallm.search.readout import READOUTS
from alphallm.solve_config import SolveConfig
from alphallm.train.critic import CriticTrainConfig
from alphallm.train.data import SPANS
from alphallm.train.dpo import DPOConfig
from alphallm.train.sft import SFTConfig

__all__ = [
    "CriticSettings",
    "EvalSettings",
    "ImagineSettings",
    "LearnSettings",
    "LoopConfig",
    "build",
    "load_config",
]

T = TypeVar("T")
logger = logging.getLogger(__name__)
SFT_STARTS = ("previous", "start")
GATE_METRICS = ("greedy", "sampled")


@dataclass(frozen=True)
class ImagineSettings:
    """Where a round's problems come from."""

    problems: int = field(default=200, metadata={"help": "new problems per round"})
    imagined_fraction: float = field(
        default=0.5, metadata={"help": "share written by the policy; the rest generated"}
    )
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of imagination"})
    difficulty: dict[str, Any] | None = field(default=None, metadata={"help": "task generator difficulty"})
    fresh: bool = field(
        default=True,
        metadata={
            "help": "problems must be new against earlier rounds (False: a round may draw earlier rounds' "
            "problems again and search them with the better policy, as STaR / ReST-EM re-attempt their "
            "whole set; for tasks with a small problem space such as game24)"
        },
    )
    problems_file: str | None = field(
        default=None,
        metadata={
            "help": "JSONL file of training problems in the task's problems-file rows (GSM8K's train.jsonl): "
            "the share not imagined is drawn from it, in a seeded order, instead of from the task's "
            "generator; needed by tasks without one (gsm8k, math). Test and dev items in it are skipped"
        },
    )

    examples: int = field(
        default=0,
        metadata={
            "help": "problems shown before the problem prefix in each imagination prompt, drawn from "
            "problems_file (else the task's generator): the policy writes a new problem in their pattern "
            "(AlphaLLM's x = g(x_1..x_m, pi); under chat_template, asked in the user's turn). 0: the bare "
            "prefix, which the shipped models were trained on; real models imagine on-task with 3-8"
        },
    )
    answer_samples: int = field(
        default=8,
        metadata={
            "help": "solutions the policy samples of each problem the verifier cannot judge (imagined gsm8k "
            "and math questions come without an answer): the answer enough of them agree on becomes the "
            "problem's, and a problem without one is dropped before the search (self-consistency "
            "pseudo-labels). 0: such problems stay unanswered, and their search teaches nothing"
        },
    )
    answer_agreement: float = field(
        default=0.6,
        metadata={"help": "the share of those samples that must reach the same answer"},
    )
    answer_temperature: float = field(default=0.7, metadata={"help": "their sampling temperature"})

    def __post_init__(self) -> None:
        if self.problems < 1 or not 0.0 <= self.imagined_fraction <= 1.0:
            raise ValueError("problems must be positive and imagined_fraction in [0, 1]")
        if self.temperature <= 0:  # imagination samples new problems
            raise ValueError(f"imagine.temperature must be above 0, not {self.temperature:g}")
        if self.examples < 0:
            raise ValueError("imagine.examples must be at least 0")
        if self.answer_samples < 0 or not 0.0 < self.answer_agreement <= 1.0 or self.answer_temperature < 0:
            raise ValueError(
                "imagine.answer_samples must be at least 0, answer_agreement in (0, 1] and "
                "answer_temperature non-negative"
            )


@dataclass(frozen=True)
class LearnSettings:
    """Policy learning: SFT on verified solutions, then optional step-DPO against the previous policy."""

    sft: SFTConfig = field(default_factory=SFTConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    use_dpo: bool = field(default=True, metadata={"help": "run step-DPO after SFT"})
    solutions_per_problem: int = field(default=2, metadata={"help": "verified solutions kept per problem"})
    replay: bool = field(default=True, metadata={"help": "also train on earlier rounds' SFT rows"})
    sft_from: str = field(
        default="previous",
        metadata={
            "help": "where each round's SFT starts: 'previous' (the policy kept after the last round) or "
            "'start' (the starting policy, on every row so far, as ReST-EM: no compounding epochs)"
        },
    )
    dpo_min_gap: float = field(
        default=0.5, metadata={"help": "least success-rate gap between paired siblings"}
    )
    dpo_pairs_per_tree: int = field(default=4, metadata={"help": "most pairs taken from one tree"})
    dpo_span: str = field(
        default="completion",
        metadata={
            "help": "what a DPO pair compares: 'completion' (both sides continued to a terminal) or "
            "'step' (the two sibling options only, Step-DPO)"
        },
    )
    trainer: str = field(
        default="lean",
        metadata={
            "help": "what trains SFT and DPO: 'lean' (this package's loops) or 'trl' (Hugging Face TRL's "
            "SFTTrainer and DPOTrainer, with the same settings; bf16 mixed precision on GPUs that have it; "
            "DPO pairs of complete solutions only, as TRL ends every side with EOS)"
        },
    )
    retry_mix: list[float] = field(
        default_factory=list,
        metadata={
            "help": "retry traces (Stream of Search): the shares of SFT rows written with 0, 1, 2, ... of "
            "the policy's own failed attempts before the verified solution, each abandoned by the task's "
            "retry line (game24: 'back'); [] trains on the solutions alone. Give the longer solutions "
            "room: evaluate.max_tokens (greedy, gate), and search.max_tokens and evaluate.search.max_tokens "
            "(rollouts)"
        },
    )
    retry_samples: int = field(
        default=8, metadata={"help": "policy samples per problem searched for failed attempts"}
    )
    retry_steps: int = field(
        default=2, metadata={"help": "steps in a failed attempt (after them the problem is unsolvable)"}
    )

    def __post_init__(self) -> None:
        if self.solutions_per_problem < 1:
            raise ValueError("learn.solutions_per_problem must be at least 1 (0 would train on no rows)")
        if not 0.0 <= self.dpo_min_gap <= 1.0:  # a gap of success rates; above 1 would pair nothing
            raise ValueError(f"learn.dpo_min_gap must be in [0, 1], not {self.dpo_min_gap:g}")
        if self.dpo_pairs_per_tree < 1:
            raise ValueError(
                "learn.dpo_pairs_per_tree must be at least 1 (learn.use_dpo: false turns DPO off)"
            )
        if self.dpo_span not in SPANS:
            raise ValueError(f"learn.dpo_span must be one of {SPANS}, not {self.dpo_span!r}")
        if self.sft_from not in SFT_STARTS:
            raise ValueError(f"learn.sft_from must be one of {SFT_STARTS}, not {self.sft_from!r}")
        check_trainer(self)
        if any(w < 0 for w in self.retry_mix) or (self.retry_mix and sum(self.retry_mix) <= 0):
            raise ValueError("learn.retry_mix must be non-negative shares with a positive sum ([]: off)")
        if self.retry_samples < 1 or self.retry_steps < 1:
            raise ValueError("learn.retry_samples and learn.retry_steps must be at least 1")
        if self.sft_from == "start" and not self.replay:
            raise ValueError(
                "learn.sft_from: start retrains the starting policy on every round's rows; "
                "it needs learn.replay: true"
            )


@dataclass(frozen=True)
class CriticSettings:
    """Learned critics: trained on all trees so far, every round (or once, as in the paper)."""

    kinds: list[str] = field(default_factory=lambda: ["value", "prm", "orm"])
    refresh: bool = field(
        default=True, metadata={"help": "retrain every round (False: train once, then freeze)"}
    )
    use_in_search: bool = field(
        default=True, metadata={"help": "add the learned critics to training-time search"}
    )
    gate: bool = field(
        default=True,
        metadata={
            "help": "keep the critic in use when it scores better than its retrained successor on held-out "
            "problems neither trained on (value: Spearman; PRM, ORM: AUC) by more than twice the bootstrap "
            "standard error of the difference"
        },
    )
    gate_tolerance: float = field(
        default=0.0,
        metadata={"help": "how much worse than the critic in use a retrained one may always score"},
    )
    gate_search: int = field(
        default=0,
        metadata={
            "help": "dev problems on which the round's critic sets (the gate's pick, the set in use, all "
            "retrained) each guide the learned-critics search of the policy that made the trees; another "
            "set replaces the gate's pick only if it solves more by over twice the paired standard error "
            "(0: off). A critic that ranks held-out labels better can still guide search worse"
        },
    )
    min_samples: int = field(default=2, metadata={"help": "verified outcomes a node needs to get a label"})
    train: CriticTrainConfig = field(default_factory=CriticTrainConfig)

    def __post_init__(self) -> None:
        bad = sorted(set(self.kinds) - {"value", "prm", "orm"})
        if bad:
            raise ValueError(f"unknown critic kind(s): {', '.join(bad)}")
        if self.gate_search < 0:
            raise ValueError("gate_search must be non-negative (0: off)")
        if self.gate_tolerance < 0:
            raise ValueError("gate_tolerance must be non-negative")
        if self.min_samples < 1:
            raise ValueError(f"critics.min_samples must be at least 1, not {self.min_samples}")


@dataclass(frozen=True)
class EvalSettings:
    """Per-round evaluation on the test split, and the dev gate."""

    test_problems: int = field(default=200, metadata={"help": "test problems for greedy decoding"})
    search_problems: int = field(default=100, metadata={"help": "test problems for the search methods"})
    dev_problems: int = field(default=100, metadata={"help": "dev problems for the gate"})
    search: SolveConfig = field(default_factory=SolveConfig, metadata={"help": "eta-MCTS used at test time"})
    self_consistency: bool = field(
        default=True, metadata={"help": "also run self-consistency at matched tokens"}
    )
    sc_temperature: float = field(default=0.7, metadata={"help": "sampling temperature of self-consistency"})
    gate_tolerance: float = field(default=0.0, metadata={"help": "dev accuracy drop a new policy may have"})
    gate_metric: str = field(
        default="greedy",
        metadata={
            "help": "the gate's dev score: greedy (greedy accuracy) or sampled (mean accuracy of "
            "gate_samples solutions per problem at gate_temperature; on a small dev set its paired "
            "noise is a third of greedy's)"
        },
    )
    gate_samples: int = field(
        default=16, metadata={"help": "solutions per dev problem (gate_metric: sampled)"}
    )
    gate_temperature: float = field(
        default=0.7, metadata={"help": "sampling temperature of the gate (gate_metric: sampled)"}
    )
    gate_search: int = field(
        default=0,
        metadata={
            "help": "the first N dev problems, on which a candidate that passes the dev score must "
            "also search (eta-MCTS above, with the verifier) no worse than the best policy kept so far, "
            "beyond twice the paired standard error (0: off). A policy can decode better while it proposes "
            "fewer distinct steps, and search worse"
        },
    )
    max_tokens: int | None = field(
        default=None,
        metadata={
            "help": "tokens a greedy or sampled solution may have, on test and in the gate (null: the "
            "task's own limit; a policy that retries, learn.retry_mix, needs more)"
        },
    )
    critics_readout: str = field(
        default="best_value",
        metadata={
            "help": "the read-out of eta-MCTS with learned critics: best_value, vote (answers weighted by "
            "their critics' scores) or most_visited. On game24 a learned ORM rates some wrong solutions as "
            "high as right ones, and among a tree's dozens of rollouts one often tops them: vote 0.47 "
            "against 0.24; on arith's rollout-free trees, where most terminals repeat one another and a "
            "vote counts every copy, it lost, 0.51 against 0.56 (benchmarks/README.md)"
        },
    )
    critics_prune_below: float | None = field(
        default=None,
        metadata={
            "help": "eta-MCTS with learned critics: a step the PRM scores at most this is a dead end "
            "(the PRM as a soft verifier; null: nothing is pruned)"
        },
    )
    dev_file: str | None = field(
        default=None,
        metadata={
            "help": "JSONL file of dev problems for the gate, in the task's problems-file rows (null: the "
            "task's dev split; gsm8k and math ship none). Its problems never enter training"
        },
    )
    test_file: str | None = field(
        default=None,
        metadata={
            "help": "JSONL file of test problems for the evaluation (null: the task's test split; math "
            "ships none). Its problems never enter training"
        },
    )

    def __post_init__(self) -> None:
        for name in ("test_problems", "search_problems", "dev_problems"):
            if getattr(self, name) < 1:
                raise ValueError(f"evaluate.{name} must be at least 1, not {getattr(self, name)}")
        if self.critics_readout not in READOUTS:
            raise ValueError(
                f"critics_readout must be one of {', '.join(READOUTS)}, not {self.critics_readout!r}"
            )
        if self.critics_prune_below is not None and not 0.0 <= self.critics_prune_below < 1.0:
            raise ValueError("critics_prune_below must lie in [0, 1)")
        if self.gate_metric not in GATE_METRICS:
            raise ValueError(
                f"gate_metric must be one of {', '.join(GATE_METRICS)}, not {self.gate_metric!r}"
            )
        if self.gate_samples < 1 or self.gate_temperature <= 0.0:
            raise ValueError("gate_samples must be at least 1 and gate_temperature above 0")
        if self.sc_temperature <= 0.0:  # self-consistency votes over samples; greedy ones are all alike
            raise ValueError(f"evaluate.sc_temperature must be above 0, not {self.sc_temperature:g}")
        if self.gate_search < 0:
            raise ValueError("gate_search must be non-negative (0: off)")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1 (null: the task's limit)")

    @property
    def gate_score(self) -> str:
        """The gate's score by name (recorded with every gate decision, so a resumed run with another
        score knows that the recorded ones do not compare)."""
        tokens = f", {self.max_tokens} tokens" if self.max_tokens else ""
        if self.gate_metric == "greedy":
            return f"greedy ({self.max_tokens} tokens)" if self.max_tokens else "greedy"
        return f"sampled (n={self.gate_samples}, T={self.gate_temperature}{tokens})"


@dataclass(frozen=True)
class LoopConfig:
    """``alphallm improve``: K rounds of imagine -> search -> criticize -> learn -> evaluate."""

    name: str = field(default="run", metadata={"help": "the run's directory under out_dir"})
    task: str = field(default="arith", metadata={"help": "arith, game24, gsm8k or math"})
    policy: str = field(
        default="",
        metadata={
            "help": "the starting policy (model dir, hub id or shipped name; empty: the task's shipped one)"
        },
    )
    rounds: int = field(default=2, metadata={"help": "self-improvement rounds"})
    seed: int = field(default=0, metadata={"help": "seed of every stage"})
    chat_template: bool = field(
        default=False,
        metadata={
            "help": "put every prompt in the policy tokenizer's chat template (instruction-tuned models): "
            "search, trees, SFT rows, DPO pairs, critics, gate and evaluation all see it"
        },
    )
    train_dtype: str | None = field(
        default=None,
        metadata={
            "help": "dtype SFT, DPO and critic training load their models in: float32, bfloat16, float16 "
            "or auto (bf16/fp16 on GPU, fp32 on CPU). Unset: float32 for full fine-tuning, auto for a "
            "stage with LoRA (lora_r), whose adapters stay fp32"
        },
    )
    out_dir: str = field(default="runs", metadata={"help": "where runs are written"})
    imagine: ImagineSettings = field(default_factory=ImagineSettings)
    search: SolveConfig = field(default_factory=SolveConfig, metadata={"help": "training-time search"})
    learn: LearnSettings = field(default_factory=LearnSettings)
    critics: CriticSettings = field(default_factory=CriticSettings)
    evaluate: EvalSettings = field(default_factory=EvalSettings)
    ray: RayConfig = field(
        default_factory=RayConfig, metadata={"help": "Ray scale-out of the search and evaluate stages"}
    )

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError("rounds must be at least 1")
        if self.seed < 0:  # numpy's generators, which the searches seed from it, take no negative seed
            raise ValueError(f"seed must be at least 0, not {self.seed}")
        check_stage_seeds(self)
        # The run's directory is out_dir/name: a name with a path in it would write elsewhere.
        if not is_plain_name(self.name):
            raise ValueError(
                f"name must be a plain directory name (no '/', not '.' or '..'), not {self.name!r}"
            )
        if not self.out_dir.strip():
            raise ValueError("out_dir must not be empty (.: the current directory)")
        check_train_dtype(self)
        check_installed(self)
        if self.evaluate.critics_prune_below is not None and "prm" not in self.critics.kinds:
            raise ValueError("evaluate.critics_prune_below needs the prm critic in critics.kinds")
        from alphallm.lm.loading import shipped_model
        from alphallm.tasks import get_task

        task = get_task(self.task)
        if not self.policy:  # the task's own model: arith's would search game24 to nothing
            shipped = shipped_model(self.task)
            if shipped is None:
                raise ValueError(
                    f"policy: task {self.task!r} ships no model; set policy to a model directory or hub id"
                )
            object.__setattr__(self, "policy", shipped)
        check_difficulty(self.task, self.imagine.difficulty)
        if self.critics.train.negatives and "orm" in self.critics.kinds and not task.has_corruptions:
            raise ValueError(f"critics.train.negatives: task {self.task!r} writes no wrong solutions")
        if self.learn.retry_mix and task.retry_line is None:
            raise ValueError(f"learn.retry_mix: task {self.task!r} has no retry line in its format")
        if not task.has_generator and self.imagine.problems_file is None:
            raise ValueError(
                f"imagine.problems_file: task {self.task!r} has no problem generator; give a JSONL file of "
                "training problems (for gsm8k, the GSM8K release's train.jsonl)"
            )
        for split, path in (("dev", self.evaluate.dev_file), ("test", self.evaluate.test_file)):
            if path is None and split not in task.shipped_splits:
                raise ValueError(
                    f"evaluate.{split}_file: task {self.task!r} ships no {split} split; give a JSONL file "
                    f"of {split} problems"
                )

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


def is_plain_name(name: str) -> bool:
    """A run name is one directory below out_dir: no path in it, not '.' or '..', not blank."""
    return bool(name.strip()) and Path(name).name == name and name not in (".", "..")


# Settings that earlier versions had and never read. A run's saved config.yaml holds them, and so does a
# config copied from one: they are dropped with a word, not refused.
RETIRED = {"critics.weight": "it never weighed anything (the learned-critics search weighs each critic 1)"}


def build(cls: type[T], data: Any, where: str = "") -> T:
    """A (nested) config dataclass from plain data; errors name the offending key. Each value must
    be of its field's annotated type (an int is no float's place, ``"no"`` is not false)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where or cls.__name__}: expected a mapping, not {data!r}")
    for key in [k for k in data if f"{where}.{k}".lstrip(".") in RETIRED]:
        dotted = f"{where}.{key}".lstrip(".")
        logger.warning(f"{dotted} is no longer a setting and is ignored: {RETIRED[dotted]}")
        data = {k: v for k, v in data.items() if k != key}
    hints = typing.get_type_hints(cls)
    unknown = unknown_keys(data, cls)
    if unknown:
        raise UserError(f"{where or cls.__name__}: unknown setting(s): {unknown}")
    values = {}
    for key, value in data.items():
        kind, dotted = hints[key], f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(kind) and not isinstance(kind, types.GenericAlias):
            values[key] = build(kind, value, dotted)  # type: ignore[arg-type]
            continue
        problem = type_problem(value, kind, dotted)
        if problem:
            raise UserError(problem)
        values[key] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where or 'config'}: {exc}") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> LoopConfig:
    """A LoopConfig from a YAML file (top-level ``overrides`` win)."""
    from alphallm.io import read_yaml_mapping

    path = Path(path)
    data = read_yaml_mapping(path)
    data.update(overrides or {})
    try:
        return build(LoopConfig, data)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
