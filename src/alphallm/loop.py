"""The self-improvement loop (AlphaLLM Algorithm 1, pushed further): for k = 1..K

    imagine   problems_k  from policy_{k-1} (and the task generator or a file): new, valid, train split only;
              one without a gold answer takes the answer policy_{k-1}'s samples agree on, or is dropped
    search    trees_k     = eta-MCTS(policy_{k-1}, critics_{k-1}, problems_k), every outcome verified
    data      SFT rows (verified solutions) and step-DPO pairs (siblings with a clear gap)
    sft, dpo  policy_k    = SFT from policy_{k-1}, then DPO with policy_{k-1} as the reference
    critics   critics_k   = value / PRM / ORM retrained on all trees so far (or frozen after round 1)
    gate      keep policy_k only if its dev accuracy does not drop (SFT + DPO over SFT alone only if it
              scores higher beyond noise; with evaluate.gate_search, its dev search must not fall below
              the best kept beyond noise)
    evaluate  test split: greedy, eta-MCTS with the verifier, with the learned critics, and
              self-consistency at matched tokens

Every stage reads its inputs from files and writes its outputs atomically under
``runs/<name>/round-<k>/``; a stage whose output exists is skipped, so a killed run resumes where it
stopped and, since every stage loads its models afresh and seeds from (seed, round, stage), reaches
the same result as an uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from alphallm.errors import UserError
from alphallm.io import dumps, exclusive, remove_temporary_files, write_json, write_link, write_text
from alphallm.loop_config import LoopConfig, load_config
from alphallm.loop_evaluate import evaluate_round
from alphallm.loop_meta import write_run_record
from alphallm.loop_solve import solve_with
from alphallm.report.stage_lines import stage_line
from alphallm.solve_config import SolveConfig
from alphallm.tasks import get_task
from alphallm.tasks.base import Problem, load_problems
from alphallm.trees import is_loop_run

__all__ = ["STAGES", "Loop", "Quiet", "gate_record"]

STAGES = ("imagine", "search", "data", "sft", "dpo", "critics", "gate", "evaluate")
STAGE_SEEDS = {name: i * 1000 for i, name in enumerate(STAGES)}


class Quiet:
    """The loop's user interface when nobody watches: no bars, no messages."""

    def progress(self, description: str, total: int) -> AbstractContextManager[Callable[[int], None]]:
        @contextmanager
        def bar() -> Iterator[Callable[[int], None]]:
            def advance(k: int = 1) -> None:
                return None

            yield advance

        return bar()

    def message(self, text: str) -> None:
        pass


class Loop:
    """One run: ``Loop(config).run()``. ``ui`` shows progress (``Quiet`` by default)."""

    def __init__(self, config: LoopConfig, *, ui: Any = None) -> None:
        self.config = config
        self.task = get_task(config.task)
        if config.chat_template:
            from alphallm.lm.loading import with_model_chat_template

            # Every round's policy is saved with the starting policy's tokenizer, so its template holds.
            self.task = with_model_chat_template(self.task, config.policy)
        self.ui = ui or Quiet()
        self.dir = config.run_dir
        self._splits: dict[str, list[Problem]] = {}

    @classmethod
    def open(cls, run_dir: str | Path) -> Loop:
        """The loop of an existing run directory, with the settings it last ran with (``config.yaml``)."""
        run = Path(run_dir)
        if not is_loop_run(run):
            raise UserError(f"{run}: not a loop run (no config.yaml)")
        return cls(load_config(run / "config.yaml", {"out_dir": str(run.parent), "name": run.name}))

    # -- problems -------------------------------------------------------------------------------
    def split_files(self) -> dict[str, str | None]:
        """The user's problem file of each split (None: the task's own split)."""
        return {
            "train": self.config.imagine.problems_file,
            "dev": self.config.evaluate.dev_file,
            "test": self.config.evaluate.test_file,
        }

    def split_problems(self, split: str) -> list[Problem]:
        """A split's problems: the config's file for it (``split_files``) when given, else the task's own."""
        if split not in self._splits:
            path = self.split_files()[split]
            if path:  # dev and test problems are scored; training problems may lack answers
                self._splits[split] = load_problems(self.task, path, scored=split != "train")
            else:
                self._splits[split] = self.task.problems(split)
        return self._splits[split]

    def held_out(self) -> set[str]:
        """The questions of the dev and test files: like the task's own dev and test items, they
        never enter training."""
        files = self.split_files()
        return {p.question for split in ("dev", "test") if files[split] for p in self.split_problems(split)}

    def read_problem_files(self) -> None:
        """Reads (and so checks) every problem file the config names: a missing file or a bad row stops a
        run at its start, not hours later at its first gate. (Not when the config loads: a finished
        run's config must still open after its files move.)"""
        self.held_out()
        if self.config.imagine.problems_file:
            self.split_problems("train")

    # -- paths and state ------------------------------------------------------------------------
    def round_dir(self, k: int) -> Path:
        return self.dir / f"round-{k}"

    def seed(self, k: int, stage: str) -> int:
        return self.config.seed * 1_000_003 + k * 100_000 + STAGE_SEEDS[stage]

    def policy(self, k: int) -> str:
        """The policy kept after round k (round 0: the starting policy): the gate's pick of the
        round's candidates (``policy``: SFT + DPO, ``sft``: SFT alone), or the one before it."""
        return self.candidate(*self.origin(k))

    def origin(self, k: int) -> tuple[int, str]:
        """Where the policy kept after round k was made: (round, candidate name); (0, "policy") for
        the starting policy."""
        if k == 0:
            return (0, "policy")
        gate = self.gate(k)
        return (k, gate["kept"]) if gate["accepted"] else self.origin(k - 1)

    def candidate(self, k: int, name: str) -> str:
        """Round k's candidate ``name`` (round 0's only candidate is the starting policy)."""
        return self.config.policy if k == 0 else str(self.round_dir(k) / name)

    def link_kept_policy(self, k: int) -> Path | None:
        """``runs/<name>/kept-policy``: a link to the policy kept after round k, the one to evaluate, serve
        or train on (a round's ``sft`` and ``policy`` directories are its two candidates, and its gate may
        keep either or neither). None, and no link, while that is a starting policy with no local
        directory (a hub id), or where links cannot be made: a convenience, it never stops a run."""
        from alphallm.lm.loading import KEPT_POLICY, resolve_model_path

        made_in, name = self.origin(k)
        if made_in:
            target = Path(f"round-{made_in}/{name}")  # relative: the run directory may move
        else:  # the starting policy: a directory named from where the run was started, or a hub id
            start = Path(resolve_model_path(self.config.policy))
            if not start.is_dir():
                return None
            target = start.resolve()
        try:
            write_link(self.dir / KEPT_POLICY, target)
        except UserError as exc:  # a file system without symbolic links
            self.ui.message(f"no {KEPT_POLICY} link: {exc}; the policy kept is {self.dir / target}")
            return None
        return self.dir / KEPT_POLICY

    def gate(self, k: int) -> dict[str, Any]:
        """Round k's gate record (``gate.json``)."""
        return gate_record(self.round_dir(k) / "gate.json")

    def critics(self, k: int) -> dict[str, str]:
        """The learned critics in use after round k (none before round 1)."""
        found = {kind: self.critic_dir(j, kind) for kind, j in self.critic_rounds(k).items()}
        return {kind: str(path) for kind, path in found.items() if (path / "critic.json").is_file()}

    def critic_rounds(self, k: int) -> dict[str, int]:
        """The round that trained each critic in use after round k: round k's, unless its critic gate
        kept an earlier one (or the critics are frozen: round 1's)."""
        if k == 0:
            return {}
        kinds = self.config.critics.kinds
        if not self.config.critics.refresh:
            return dict.fromkeys(kinds, 1)
        record = self.round_dir(k) / "critics.json"
        kept = json.loads(record.read_text()).get("kept", {}) if record.exists() else {}
        return {kind: int(kept.get(kind, k)) for kind in kinds}

    def critic_dir(self, k: int, kind: str) -> Path:
        """Where round k's critic of ``kind`` is saved (the gate may not have kept it)."""
        return self.round_dir(k) / "critics" / kind

    def _problems(self, k: int) -> list[Problem]:
        lines = (self.round_dir(k) / "problems.jsonl").read_text().splitlines()
        return [Problem(**json.loads(line)) for line in lines if line.strip()]

    def trees(self, rounds: range) -> list[dict[str, Any]]:
        """The training search's trees of ``rounds``, in order."""
        trees: list[dict[str, Any]] = []
        for j in rounds:
            trees.extend(json.loads((self.round_dir(j) / "trees.json").read_text())["trees"])
        return trees

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        """Runs (or resumes) every round; returns one metrics record per round, round 0 first."""
        # Two processes on one run would train over each other's stages (a resumed run beside a live one).
        with exclusive(self.dir, "self-improvement run"):
            remove_temporary_files(self.dir)  # a killed run's; held alone, none is live
            return self._run()

    def _run(self) -> list[dict[str, Any]]:
        self._write_meta()
        self.read_problem_files()
        if not (self.round_dir(0) / "eval.json").exists():
            self.ui.message("round 0: evaluating the starting policy")
            record = evaluate_round(self, 0, {})
            write_json(self.round_dir(0) / "eval.json", record)
            _drop_chunks(self.round_dir(0))
            self.ui.message(f"round 0: evaluated: {stage_line('evaluate', record)}")
        self._write_metrics()
        self.link_kept_policy(0)
        for k in range(1, self.config.rounds + 1):
            for stage in STAGES:
                output = self.round_dir(k) / f"{stage}.json"
                if output.exists():
                    continue
                self.ui.message(f"round {k}: {stage}")
                started = time.perf_counter()
                result = getattr(self, f"_stage_{stage}")(k)
                result["seconds"] = round(time.perf_counter() - started, 1)
                write_json(output, result)  # written last: the stage is done
                _drop_chunks(self.round_dir(k))
                summary = stage_line(stage, result)
                self.ui.message(
                    f"round {k}: {stage} done in {result['seconds']:g} s"
                    + (f": {summary}" if summary else "")
                )
            self._write_metrics()
            self.link_kept_policy(k)
        return self.metrics()

    def _write_metrics(self) -> list[dict[str, Any]]:
        """``metrics.jsonl`` after every round, so a long run can be followed (and plotted) as it goes."""
        metrics = self.metrics()
        write_text(self.dir / "metrics.jsonl", "".join(dumps(m) + "\n" for m in metrics))
        return metrics

    def report(self) -> Path:
        """Plots, tree pages and the HTML report (``runs/<name>/report/index.html``)."""
        from alphallm.report.run_report import write_report

        policies = {k: self.policy(k) for k in range(self.config.rounds + 1)}
        return write_report(self.dir, self.metrics(), policies=policies, beta=self.config.learn.dpo.beta)

    def metrics(self) -> list[dict[str, Any]]:
        """Per-round records read back from the round directories (so a resumed run agrees)."""
        out = []
        for k in range(self.config.rounds + 1):
            path = self.round_dir(k) / ("eval.json" if k == 0 else "evaluate.json")
            if path.exists():
                record = json.loads(path.read_text())
                record.pop("seconds", None)
                out.append({"round": k, **record})
        return out

    def _write_meta(self) -> None:
        write_run_record(
            self.dir,
            self.config,
            position=self.position,
            message=self.ui.message,
        )

    def position(self) -> dict[str, Any]:
        """How far the run got: the rounds done, and the first stage not yet done (the one a resumed run
        starts with; the stages before it in that round ran with the code and settings before)."""
        done = sum((self.round_dir(k) / "evaluate.json").exists() for k in range(1, self.config.rounds + 1))
        if not (self.round_dir(0) / "eval.json").exists():
            return {"rounds_done": 0, "next_stage": "round 0: eval"}
        for k in range(1, self.config.rounds + 1):
            for stage in STAGES:
                if not (self.round_dir(k) / f"{stage}.json").exists():
                    return {"rounds_done": done, "next_stage": f"round {k}: {stage}"}
        return {"rounds_done": done, "next_stage": None}

    # -- stages (each returns the record written to round-k/<stage>.json) ------------------------
    def _stage_imagine(self, k: int) -> dict[str, Any]:
        from alphallm.imagine import answer_by_agreement, mix_problems
        from alphallm.lm import load_lm

        settings = self.config.imagine
        pool = {p.question for j in range(1, k) for p in self._problems(j)} if settings.fresh else set()
        lm = load_lm(self.policy(k - 1))
        problems, stats = mix_problems(
            self.task,
            lm,
            settings.problems,
            imagined_fraction=settings.imagined_fraction,
            pool=pool | self.held_out(),
            difficulty=settings.difficulty,
            temperature=settings.temperature,
            seed=self.seed(k, "imagine"),
            source=self.split_problems("train") if settings.problems_file else None,
            shots=settings.examples,
        )
        if settings.answer_samples:
            problems, answered = answer_by_agreement(
                self.task,
                lm,
                problems,
                samples=settings.answer_samples,
                agreement=settings.answer_agreement,
                temperature=settings.answer_temperature,
                seed=self.seed(k, "imagine") + 1,
                max_tokens=self.config.evaluate.max_tokens,
            )
            stats["answers"] = answered.to_dict()
        if not problems:
            raise UserError(
                f"round {k}: imagination and {settings.problems_file} left no new problems"
                + (" with an agreed answer" if stats.get("answers", {}).get("dropped") else "")
            )
        write_text(self.round_dir(k) / "problems.jsonl", "".join(dumps(asdict(p)) + "\n" for p in problems))
        return {"problems": len(problems), **stats}

    def _stage_search(self, k: int) -> dict[str, Any]:
        problems = self._problems(k)
        config = self._with_critics(
            self.config.search, self.critics(k - 1) if self.config.critics.use_in_search else {}
        )
        config = replace(config, seed=self.seed(k, "search"))
        with self.ui.progress(f"round {k} search", len(problems)) as advance:
            report = solve_with(
                self.task,
                problems,
                policy=self.policy(k - 1),
                config=config,
                ray=self.config.ray,
                chunks=self.round_dir(k) / "search.chunks",
                keep_trees=True,
                progress=advance,
            )
        trees = [r.tree for r in report.results]
        write_json(self.round_dir(k) / "trees.json", {"trees": trees})
        return {k_: v for k_, v in report.summary().items() if k_ != "readouts"}

    def _stage_data(self, k: int) -> dict[str, Any]:
        from alphallm.train.data import dpo_pairs, sft_rows
        from alphallm.train.labels import complete_solutions

        trees = self.trees(range(k, k + 1))
        learn = self.config.learn
        # Only right solutions that state their answer are taught (train/data.py).
        stated = self.task.is_terminal
        rows = sft_rows(trees, per_problem=learn.solutions_per_problem, states_answer=stated)
        pairs = dpo_pairs(
            trees,
            min_gap=learn.dpo_min_gap,
            per_tree=learn.dpo_pairs_per_tree,
            span=learn.dpo_span,
            states_answer=stated,
        )
        found = [complete_solutions(t) for t in trees]
        solved = sum(any(c.verified for c in solutions) for solutions in found)
        unstated = sum(bool(c.verified) and not stated(c.solution) for solutions in found for c in solutions)
        record = {"sft": rows, "pairs": [asdict(p) for p in pairs], "problems": len(trees), "solved": solved}
        return record | {"right_without_an_answer_line": unstated}

    def _stage_sft(self, k: int) -> dict[str, Any]:
        from alphallm.loop_learn import sft_stage

        return sft_stage(self, k)

    def sft_rows(self, k: int) -> list[tuple[str, str]]:
        """The rows round k's SFT stage trains on: the data stages' rows of rounds 1..k (of round k
        alone without ``learn.replay``), each once. benchmarks/sft_sweep.py retrains on them too."""
        rounds = range(1, k + 1) if self.config.learn.replay else range(k, k + 1)
        # A problem drawn again in a later round may find a solution it found before: train on it once.
        return list(dict.fromkeys((r[0], r[1]) for j in rounds for r in self.read(j, "data")["sft"]))

    def _stage_dpo(self, k: int) -> dict[str, Any]:
        from alphallm.loop_learn import dpo_stage

        return dpo_stage(self, k)

    def _stage_critics(self, k: int) -> dict[str, Any]:
        from alphallm.loop_critics import critics_stage

        return critics_stage(self, k)

    def _stage_gate(self, k: int) -> dict[str, Any]:
        from alphallm.loop_gate import gate_stage

        return gate_stage(self, k)

    def _stage_evaluate(self, k: int) -> dict[str, Any]:
        from alphallm.loop_evaluate import evaluate_stage

        return evaluate_stage(self, k)

    # -- helpers --------------------------------------------------------------------------------
    def relative(self, path: str) -> str:
        """A path inside the run directory, relative to it (records do not depend on where runs live)."""
        try:
            return str(Path(path).relative_to(self.dir))
        except ValueError:
            return path

    def read(self, k: int, stage: str) -> dict[str, Any]:
        """Round k's record of a finished stage (``round-k/<stage>.json``)."""
        return json.loads((self.round_dir(k) / f"{stage}.json").read_text())

    def kept_dev_accuracy(self, k: int) -> float:
        """Dev accuracy of the policy kept after round k: round k's gate scored it, unless the run
        was resumed with another number of dev problems or another gate score since (or k is 0)."""
        gate = self.gate(k) if k > 0 else {}
        settings = self.config.evaluate
        if (gate.get("dev_problems"), gate.get("metric")) != (
            settings.dev_problems,
            settings.gate_score,
        ):
            return self.dev_accuracy(self.policy(k))
        return float(gate["dev_accuracy"] if gate["accepted"] else gate["previous_dev_accuracy"])

    def dev_accuracy(self, policy: str) -> float:
        """The gate's score of a policy (``evaluate.gate_metric``) on the run's dev problems."""
        return self.dev_scores(policy)[0]

    def dev_scores(self, policy: str) -> tuple[float, dict[str, float]]:
        """The gate's score of a policy, and each dev problem's (1/0 greedy, or its share of right
        samples), from one decoding: candidates are compared problem by problem."""
        from alphallm.report.stats import share_by_problem

        result = self.dev_evaluation(policy)
        return float(result.metrics["accuracy"]), share_by_problem(
            (r.problem_id, r.correct) for r in result.records
        )

    def dev_evaluation(self, policy: str) -> Any:
        """The gate's decoding of the run's dev problems: greedy, or ``gate_samples`` sampled solutions
        per problem. Every policy is sampled with the run's seed, so the candidates and the policy
        before them meet the same draws."""
        from alphallm.evaluation import evaluate
        from alphallm.lm import load_lm

        settings = self.config.evaluate
        return evaluate(
            self.task,
            load_lm(policy),
            self.split_problems("dev")[: settings.dev_problems],
            method="greedy" if settings.gate_metric == "greedy" else "sample",
            n=settings.gate_samples,
            temperature=settings.gate_temperature,
            seed=self.config.seed,
            max_tokens=settings.max_tokens,
        )

    @staticmethod
    def _with_critics(config: SolveConfig, critics: dict[str, str]) -> SolveConfig:
        if not critics:
            return config
        weights = {**config.weights, **{kind: config.weights.get(kind, 1.0) for kind in critics}}
        return replace(config, critic_dirs=critics, weights=weights)


def gate_record(path: Path) -> dict[str, Any]:
    """A round's ``gate.json`` as the loop writes it today: older records have no ``metric`` (their
    gate scored greedy decoding) and may have no ``kept`` (SFT + DPO was the only candidate)."""
    return {"metric": "greedy", "kept": "policy", **json.loads(path.read_text())}


def _drop_chunks(round_dir: Path) -> None:
    """A finished stage's search chunks (its resume points) are in its output now."""
    for chunks in round_dir.glob("*.chunks"):
        shutil.rmtree(chunks, ignore_errors=True)
