"""``alphallm train-critic`` and ``alphallm eval-critic``: critics from saved search trees."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphallm.commands._flags import finite_float
from alphallm.errors import UserError
from alphallm.train.labels import label_rows, unlearnable

if TYPE_CHECKING:
    from alphallm.tasks.base import Task


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("train-critic", help="train a value, PRM or ORM critic on saved search trees")
    p.add_argument("--kind", required=True, choices=("value", "prm", "orm"))
    p.add_argument(
        "--trees",
        required=True,
        nargs="+",
        help="tree JSON files or directories (search --save-trees; a loop run or round: its trees.json)",
    )
    p.add_argument("--base", required=True, help="backbone to start from (usually the policy model)")
    p.add_argument("--out", required=True, help="output critic directory")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=finite_float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--holdout", type=finite_float, default=0.2, help="fraction of problems held out for early stopping"
    )
    p.add_argument(
        "--max-rows", type=int, help="sample at most this many training rows (0: all, the default)"
    )
    p.add_argument(
        "--max-held-out-rows",
        type=int,
        default=5000,
        help="score at most this many held-out rows, whole problems (0: all; default 5000)",
    )
    p.add_argument("--min-samples", type=int, default=2, help="verified outcomes a node needs to get a label")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--lora-r", type=int, default=0, help="LoRA rank of the backbone (0: full fine-tuning, the default)"
    )
    p.add_argument(
        "--confidence",
        action="store_true",
        help="also read the base model's own token log-probs of the solution (its slips); "
        "the backbone stays frozen (with --lora-r: features from the base without adapters)",
    )
    p.add_argument(
        "--token-evidence",
        action="store_true",
        help="with --confidence: also score every solution token (its context and how the base rated "
        "it) and let the worst ones lower the critic's score",
    )
    p.add_argument(
        "--negatives",
        type=int,
        default=0,
        help="ORM only: add this many wrong variants of every correct training solution (one step "
        "miswritten the way the task's policies err, Task.corrupt) as negatives (default 0)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument(
        "--dtype",
        help="backbone dtype: float32, bfloat16, float16 or auto (default: float32; "
        "with --lora-r, auto = bf16/fp16 on GPU with fp32 adapters)",
    )
    p.set_defaults(run=run_train)

    e = sub.add_parser(
        "eval-critic", help="AUC, rank correlation and calibration of a critic on held-out trees"
    )
    e.add_argument(
        "--critic",
        required=True,
        help="critic directory (train-critic --out), 'tool' for the task's tool verifier, or "
        "'consistency' for the share of --model's sampled solutions reaching each solution's answer",
    )
    e.add_argument(
        "--trees",
        required=True,
        nargs="+",
        help="held-out tree JSON files or directories (a loop run or round: its trees.json)",
    )
    e.add_argument(
        "--kind",
        choices=("value", "prm", "orm"),
        help="the labels to score against (default: the critic's own kind; needed with --critic tool)",
    )
    e.add_argument(
        "--no-reachability",
        action="store_true",
        help="the tool verifier (--critic tool, or --dead-ends) checks legality only, not whether the state "
        "can still be solved",
    )
    e.add_argument(
        "--steps",
        choices=("last", "min", "prod"),
        default="last",
        help="score each solution once (last, the default) or score every step prefix and take the "
        "lowest score (min, Math-Shepherd) or their product (prod, Lightman et al.): a PRM as an ORM",
    )
    e.add_argument(
        "--dead-ends",
        action="store_true",
        help="with a learned critic: score 0 where the task's tool verifier finds the state dead (an "
        "illegal step, or no way left to the answer), the critic's score elsewhere; what the search "
        "backs up when it prunes with the verifier",
    )
    e.add_argument(
        "--unseen",
        action="store_true",
        help="with a learned critic: score only the trees' problems it did not train on (its critic.json "
        "names them), so the trees it trained from give held-out figures",
    )
    e.add_argument(
        "--task",
        help="the task the trees were searched for, where they do not name it (trees saved before "
        "they recorded it, such as older loop rounds' trees.json); used by --critic tool and --dead-ends",
    )
    e.add_argument("--min-samples", type=int, default=2, help="verified outcomes a node needs to get a label")
    e.add_argument("--model", help="--critic consistency: the policy whose samples vote (usually the trees')")
    e.add_argument(
        "--samples", type=int, default=8, help="--critic consistency: solutions sampled per problem (8)"
    )
    e.add_argument(
        "--temperature", type=finite_float, default=0.7, help="--critic consistency: their temperature (0.7)"
    )
    e.add_argument("--seed", type=int, default=0, help="--critic consistency: seed of the samples")
    e.add_argument("--out", help="JSON file for the metrics")
    e.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    e.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 or auto (fp32 on CPU)")
    e.set_defaults(run=run_eval)


def run_train(args: argparse.Namespace) -> int:
    from alphallm.commands._ui import console, print_table, progress_bar
    from alphallm.io import atomic_dir, check_out_dir
    from alphallm.lm.loading import load_causal_lm, model_files, pinned_model_path, training_dtype
    from alphallm.train.checkpoint import checkpoint_beside, steps_to
    from alphallm.train.critic import (
        CriticTrainConfig,
        critic_checkpoint,
        task_corrupter,
        train_critic,
        training_steps,
    )
    from alphallm.trees import read_trees

    _check_counts(args)
    check_out_dir(args.out, marker="critic.json", what="critic")  # before the training it would hold
    resume_from = checkpoint_beside(args.out)  # and where a killed training resumes
    try:
        config = CriticTrainConfig(
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            holdout=args.holdout,
            max_rows=args.max_rows or None,
            max_held_out_rows=args.max_held_out_rows or None,
            seed=args.seed,
            lora_r=args.lora_r,
            confidence=args.confidence,
            token_evidence=args.token_evidence,
            negatives=args.negatives,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.negatives and args.kind != "orm":
        raise UserError(f"--negatives are wrong complete solutions, for an ORM (not --kind {args.kind})")
    trees = read_trees(args.trees)
    rows = label_rows(args.kind, trees, args.min_samples)
    reason = unlearnable(rows, minimum=10)
    if reason:
        raise UserError(
            f"{', '.join(args.trees)}: {reason} ({args.kind}, from {len(trees)} trees): a critic learns "
            "from verified successes and failures both; search more problems, with rollouts"
        )
    corrupt = None
    if args.negatives:
        try:
            corrupt = task_corrupter(_trees_task(trees, "--negatives"))
        except ValueError as exc:
            raise UserError(f"--negatives: {exc}") from None
    dtype = training_dtype(args.dtype, lora=args.lora_r > 0)
    base, tokenizer = load_causal_lm(args.base, device=args.device, dtype=dtype)
    # Rerunning a killed command resumes from the last checkpoint (``train_critic``).
    files = model_files(args.base)
    checkpoint = critic_checkpoint(resume_from, rows, args.kind, config, files=files, base=base)
    with progress_bar(f"train {args.kind} critic", training_steps(rows, config, args.kind)) as advance:
        model, metrics = train_critic(
            rows,
            base=base,
            tokenizer=tokenizer,
            kind=args.kind,
            config=config,
            on_step=steps_to(advance),
            corrupt=corrupt,
            checkpoint=checkpoint,
        )
    tasks = {tree.get("task") for tree in trees}
    meta = {
        "base": pinned_model_path(str(args.base)),  # a link by what it links to now
        "task": tasks.pop() if len(tasks) == 1 else None,  # the critic is checked against it when used
        "trees": [str(t) for t in args.trees],
        "trees_count": len(trees),
        **metrics,
    }
    with atomic_dir(args.out, marker="critic.json", what="critic") as tmp:
        model.save(tmp, tokenizer, meta)
    checkpoint.remove()
    if "held_out" in metrics:
        print_table(f"{args.kind} critic on held-out problems", metrics["held_out"])
    resumed = f"; resumed at step {metrics['resumed_at_step']}" if "resumed_at_step" in metrics else ""
    console.print(
        f"critic: {args.out} ({metrics['train_rows']} training rows, {metrics['train_seconds']} s{resumed})"
    )
    return 0


def _check_counts(args: argparse.Namespace) -> None:
    """Row caps take 0 for all (a negative one would reach random.sample); a label needs an outcome."""
    for flag in ("max_rows", "max_held_out_rows"):
        value = getattr(args, flag, None)
        if value is not None and value < 0:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 0 (0: all), not {value}")
    if args.min_samples < 1:
        raise UserError(f"--min-samples must be at least 1, not {args.min_samples}")


def run_eval(args: argparse.Namespace) -> int:
    from alphallm.commands._ui import console, print_table
    from alphallm.critics.tool import on_dead_ends, row_scores
    from alphallm.io import check_out_file, write_json
    from alphallm.train.critic import critic_metrics
    from alphallm.trees import read_trees

    _check_counts(args)
    if args.out:  # before the scoring (minutes of sampling for the consistency critic), as eval does
        check_out_file(args.out)
    if args.no_reachability and args.critic != "tool" and not args.dead_ends:
        raise UserError(
            "--no-reachability sets the tool verifier's check: give it with --critic tool or --dead-ends"
        )
    if (args.model is not None) != (args.critic == "consistency"):
        raise UserError("--critic consistency needs --model (the policy whose samples vote), and only it")
    trees = read_trees(args.trees)
    score: Callable[[list[Any]], list[float]]
    trained: set[str] | None = None  # the problems a learned critic trained on, where it records them
    if args.unseen and args.critic in ("consistency", "tool"):
        raise UserError(
            f"--unseen leaves out the problems a learned critic trained on; --critic {args.critic} "
            "trained on none"
        )
    if args.critic == "consistency":
        if args.dead_ends:
            raise UserError("--dead-ends adds the tool verifier to a learned critic, not to consistency")
        kind, name = args.kind or "orm", f"consistency of {args.samples} samples at {args.temperature}"
        if kind != "orm":
            raise UserError(f"--critic consistency judges complete solutions: --kind orm, not {kind}")
        score = _consistency_scorer(args, _trees_task(trees, "--critic consistency", args.task))
    elif args.critic == "tool":
        if args.kind is None:
            raise UserError("--critic tool needs --kind (the labels to score it against: value, prm or orm)")
        if args.dead_ends:
            raise UserError(
                "--dead-ends adds the tool verifier to a learned critic; --critic tool is that tool"
            )
        kind, name = args.kind, "tool" + ("-legality" if args.no_reachability else "")
        score = partial(
            row_scores,
            _trees_task(trees, "--critic tool", args.task),
            reachability=not args.no_reachability,
        )
    else:
        from alphallm.critics.critic_meta import check_critic_task
        from alphallm.critics.learned import CriticModel
        from alphallm.train.critic_data import predict

        for trees_task in sorted({str(tree["task"]) for tree in trees if tree.get("task")}):
            check_critic_task(args.critic, trees_task)  # before its weights load
        model, tokenizer, meta = CriticModel.load(args.critic, device=args.device, dtype=args.dtype)
        kind, name = args.kind or meta["kind"], f"{meta['kind']} critic {Path(args.critic).name}"
        score = partial(predict, model, tokenizer)
        trained = set(meta["trained_problems"]) if "trained_problems" in meta else None
    rows = label_rows(kind, trees, args.min_samples)
    if args.unseen:
        rows = _unseen(rows, trained, args.critic)
        name += ", on the problems it did not train on"
    in_sample = len({row.group for row in rows} & trained) if trained else 0
    if args.steps == "last" or not rows:
        scores = score(rows) if rows else []
    else:
        prefixes = [step_prefixes(row) for row in rows]
        flat = score([p for group in prefixes for p in group])
        scores = combine_steps(flat, [len(group) for group in prefixes], args.steps)
        name += f", {args.steps} over steps"
    if not rows:
        raise UserError(f"no {kind} labels in {len(trees)} trees")
    dead = 0
    if args.dead_ends:
        task = _trees_task(trees, "--dead-ends", args.task)
        tool = row_scores(task, rows, reachability=not args.no_reachability)
        scores = on_dead_ends(scores, tool)
        dead, name = tool.count(0.0), name + ", 0 on the verifier's dead ends"
    metrics = critic_metrics(kind, scores, rows) | ({"dead_ends": dead} if args.dead_ends else {})
    print_table(f"{name} on the {kind} labels of {len(trees)} trees", metrics)
    if in_sample:
        console.print(
            f"note: {in_sample} of these problems trained the critic, so these figures are partly in-sample; "
            "--unseen scores only the others"
        )
    if args.out:
        record = {"critic": args.critic, "kind": kind, "trees": args.trees, **metrics}
        write_json(args.out, record | {"in_sample_problems": in_sample})
        console.print(f"metrics: {args.out}")
    return 0


def _unseen(rows: list[Any], trained: set[str] | None, critic: str) -> list[Any]:
    """The rows of problems the critic did not train on (``--unseen``)."""
    if trained is None:
        raise UserError(
            f"--unseen: {critic}/critic.json does not name the problems it trained on (a critic trained "
            "before it recorded them); score it on other trees"
        )
    unseen = [row for row in rows if row.group not in trained]
    if rows and not unseen:
        raise UserError(f"--unseen: the critic {critic} trained on every problem of these trees")
    return unseen


def _consistency_scorer(args: argparse.Namespace, task: Task) -> Callable[[list[Any]], list[float]]:
    """Scores ORM rows (complete solutions) by the consistency critic of ``--model``."""
    from alphallm.critics.base import row_inputs
    from alphallm.critics.consistency import ConsistencyCritic
    from alphallm.lm import load_lm

    try:
        critic = ConsistencyCritic(
            task,
            load_lm(args.model, device=args.device, dtype=args.dtype),
            samples=args.samples,
            temperature=args.temperature,
            seed=args.seed,
        )
    except ValueError as exc:
        raise UserError(f"--critic consistency: {exc}") from None

    def score(rows: list[Any]) -> list[float]:
        # A row with no answer is no complete solution to the critic (None): it agrees with nothing.
        return [0.0 if s is None else s for s in critic.score(row_inputs(task, rows))]

    return score


def step_prefixes(row: Any) -> list[Any]:
    """The row at every step: its solution cut after each line (the search's options are lines)."""
    lines = row.solution.splitlines(keepends=True) or [row.solution]
    return [replace(row, solution="".join(lines[: i + 1])) for i in range(len(lines))]


def combine_steps(scores: list[float], sizes: list[int], how: str) -> list[float]:
    """One score per solution from its steps' scores (``sizes`` consecutive scores each)."""
    import math

    out, start = [], 0
    for size in sizes:
        group = scores[start : start + size]
        out.append(min(group) if how == "min" else math.prod(group))
        start += size
    return out


def _trees_task(trees: list[dict[str, Any]], flag: str, task: str | None = None) -> Task:
    """The task the trees were searched for: ``task`` if given, else the one they all name."""
    from alphallm.tasks import get_task

    names = {tree.get("task") for tree in trees}
    if task is not None:
        others = sorted(str(name) for name in names - {None, task})
        if others:  # trees that name another task are not this task's
            raise UserError(f"--task {task}: the trees were searched for {', '.join(others)}")
        return get_task(task)
    if len(names) != 1 or None in names:
        found = ", ".join(sorted(str(name) for name in names))
        raise UserError(f"{flag} needs trees of one named task (search --save-trees) or --task, got: {found}")
    return get_task(str(names.pop()))
