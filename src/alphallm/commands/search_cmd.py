"""``alphallm search``: solve problems with eta-MCTS or a baseline and report accuracy and compute."""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from alphallm.commands._flags import finite_float
from alphallm.commands.eval_cmd import Flag, add_model_arguments, model_label
from alphallm.errors import UserError
from alphallm.io import read_yaml_mapping


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "search", help="solve problems with eta-MCTS or a baseline (greedy, sc, bon, beam, bfs)"
    )
    p.add_argument("--task", required=True, help="arith, game24, gsm8k or math")
    p.add_argument(
        "--model",
        help="policy model, or a server's URL, http://HOST:PORT/v1[#name] (default: <task>-base, the "
        "task's shipped model; gsm8k and math ship none)",
    )
    p.add_argument(
        "--method",
        choices=("mcts", "greedy", "sc", "bon", "beam", "bfs"),
        help="search method (default: the config's, else mcts)",
    )
    p.add_argument(
        "--config", help="YAML file of search settings (keys of SolveConfig; 'mcts:' for MCTSConfig)"
    )
    p.add_argument("--problems", help="JSONL file of your own problems (default: the task's split)")
    p.add_argument(
        "--split", choices=("train", "dev", "test"), help="built-in split (default test; not with --problems)"
    )
    p.add_argument("--limit", type=int, help="only the first N problems")
    budget = p.add_argument_group("budget")
    budget.add_argument("--simulations", type=int, help="mcts: simulations per problem")
    budget.add_argument("--samples", type=int, help="sc/bon: solutions per problem")
    budget.add_argument("--beam-width", type=int, help="beam: open nodes kept per step")
    budget.add_argument("--expansions", type=int, help="beam/bfs: children per expanded node")
    budget.add_argument("--bfs-budget", type=int, help="bfs: expansions per problem")
    budget.add_argument("--rollouts", type=int, help="fast rollouts per new node (0: none)")
    budget.add_argument(
        "--max-tokens",
        type=int,
        help="tokens a rollout or a completed read-out may generate (default: the task's limit)",
    )
    p.add_argument("--rollout-model", help="a smaller model for fast rollouts (default: the policy itself)")
    p.add_argument(
        "--critic",
        action="append",
        default=[],
        metavar="KIND=DIR",
        help="a learned critic (value, prm or orm) from train-critic; repeatable",
    )
    p.add_argument(
        "--weight",
        action="append",
        default=[],
        metavar="NAME=W",
        help="critic weight (tool, rollout, value, prm, orm, implicit_q, consistency, oracle); repeatable "
        "(implicit_q needs 'anchor: MODEL' in --config; consistency samples the policy, "
        "consistency_samples and consistency_temperature in --config)",
    )
    p.add_argument("--temperature", type=finite_float, help="policy sampling temperature")
    p.add_argument(
        "--readout", choices=("auto", "most_visited", "best_value", "vote", "majority"), help="mcts read-out"
    )
    p.add_argument(
        "--compare-readouts",
        nargs="+",
        choices=("most_visited", "best_value", "vote", "majority"),
        metavar="READOUT",
        help="also score these read-outs on the same trees (no extra search): "
        "most_visited, best_value, vote, majority",
    )
    p.add_argument("--batch-size", type=int, help="problems searched together")
    p.add_argument("--seed", type=int, help="search and sampling seed (default: the config's, else 0)")
    add_model_arguments(p)
    p.add_argument("--save-trees", metavar="DIR", help="write every tree as JSON (one file per problem)")
    p.add_argument(
        "--out",
        help="JSON results (default runs/search/<task>-<model>-<method>.json, with the settings flags "
        "given (-s32 for --simulations 32, -tool0 for --weight tool=0, ...), then -dev, -train or "
        "-<problems file stem> and -first<N> with --limit before .json; <model> is a local model "
        "directory's absolute path's last three parts joined by '-', as in X-round-2-policy)",
    )
    add_ray_arguments(p)
    p.set_defaults(run=run)


def add_ray_arguments(p: Any) -> None:
    ray = p.add_argument_group("Ray scale-out")
    ray.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="shard problems over Ray actors: join ADDRESS ('auto', HOST:PORT); alone: a local cluster",
    )
    ray.add_argument(
        "--ray-workers", type=int, metavar="N", help="Ray actors, each with its own model replica (default 2)"
    )
    ray.add_argument(
        "--ray-gpus",
        type=finite_float,
        metavar="G",
        help="GPUs per Ray actor (default 0: CPU; 0.5: two share a GPU)",
    )


def ray_config(args: argparse.Namespace, base: Any = None) -> Any:
    """The RayConfig of ``--ray``/``--ray-workers``/``--ray-gpus`` on top of ``base`` (a config's)."""
    from dataclasses import replace

    from alphallm.distributed.config import RayConfig

    base = base if base is not None else RayConfig()
    changes: dict[str, Any] = {}
    if args.ray is not None:
        changes.update(enabled=True, address=None if args.ray == "local" else args.ray)
    if args.ray_workers is not None:
        changes["workers"] = args.ray_workers
    if args.ray_gpus is not None:
        changes["gpus_per_worker"] = args.ray_gpus
    if changes and not changes.get("enabled", base.enabled):
        raise UserError("--ray-workers and --ray-gpus need --ray")
    try:
        return replace(base, **changes)
    except ValueError as exc:
        raise UserError(f"--ray: {exc}") from None


# The flags that change what a search computes, as parts of its default results name (``settings_label``).
SEARCH_FLAGS: dict[str, Flag] = {
    "config": (lambda path: Path(path).stem, None),
    "simulations": (lambda n: f"s{n}", None),
    "samples": (lambda n: f"n{n}", None),
    "beam_width": (lambda n: f"beam{n}", None),
    "expansions": (lambda n: f"x{n}", None),
    "bfs_budget": (lambda n: f"bfs{n}", None),
    "rollouts": (lambda n: f"r{n}", None),
    "max_tokens": (lambda n: f"tok{n}", None),
    "rollout_model": (lambda name: f"rm-{model_label(name)}", None),
    "critic": (
        lambda items: "-".join(f"{i.partition('=')[0]}-{model_label(i.partition('=')[2])}" for i in items),
        [],
    ),
    "weight": (lambda items: "-".join(item.replace("=", "") for item in items), []),
    "temperature": (lambda t: f"t{t:g}", None),
    "readout": (str, None),
    "batch_size": (lambda n: f"b{n}", None),  # each batch is seeded by its position
    "seed": (lambda seed: f"seed{seed}", None),
    "chat_template": (lambda _: "chat", False),
}

_FLAG_TO_FIELD = {
    "samples": "samples",
    "beam_width": "beam_width",
    "expansions": "expansions",
    "bfs_budget": "bfs_budget",
    "rollouts": "rollouts",
    "temperature": "temperature",
    "readout": "readout",
    "batch_size": "batch_size",
    "max_tokens": "max_tokens",
    "compare_readouts": "compare_readouts",
    "method": "method",
    "seed": "seed",
}


def build_config(args: argparse.Namespace) -> Any:
    """SolveConfig from an optional YAML file, then the flags on top."""
    from alphallm.solve_config import SolveConfig

    if args.readout is not None and args.method not in (None, "mcts"):
        raise UserError(f"--readout reads out an eta-MCTS tree; --method {args.method} has its own")
    data: dict[str, Any] = read_yaml_mapping(args.config) if args.config else {}
    where = f"{args.config}: " if args.config else ""
    for section in ("mcts", "weights", "critic_dirs"):  # merged with flags below, so checked first
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise UserError(
                f"{where}invalid search settings: {section}: expected a mapping, not {data[section]!r}"
            )
    data["mcts"] = dict(data.get("mcts") or {})
    if args.simulations is not None:
        data["mcts"]["num_simulations"] = args.simulations
    for flag, name in _FLAG_TO_FIELD.items():
        if getattr(args, flag) is not None:
            data[name] = getattr(args, flag)
    data["critic_dirs"] = {**(data.get("critic_dirs") or {}), **_pairs(args.critic, "--critic", str)}
    # ``weights: {}`` means no critics at all; only a missing key takes the default weights, and only
    # then does a ``--critic`` get weight 1. Weights the config spells out are kept as they are: a
    # critic they leave out would silently change the search (a "PRM only" run that also used the
    # value and ORM heads), so it must get its weight explicitly (0 for an ORM that only scores rollouts).
    explicit = data.get("weights") is not None
    weights = data["weights"] if explicit else SolveConfig().weights
    data["weights"] = {**weights, **_pairs(args.weight, "--weight", float)}
    for kind in data["critic_dirs"]:
        if kind not in data["weights"] and explicit:
            raise UserError(
                f"--critic {kind}: {args.config} sets weights without {kind!r}; add it there or pass "
                f"--weight {kind}=W (0 to load it only for scoring rollouts)"
            )
        data["weights"].setdefault(kind, 1.0)
    try:
        return SolveConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        where = f"{args.config}: " if args.config else ""
        raise UserError(f"{where}invalid search settings: {exc}") from None


def _pairs(items: list[str], flag: str, convert: Any) -> dict[str, Any]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"{flag} expects NAME=VALUE, got {item!r}")
        try:
            out[name] = convert(value)
        except ValueError:
            raise UserError(f"{flag} {item!r}: {value!r} is not a valid value") from None
    return out


def _check_learned_weights(config: Any) -> None:
    """A learned critic's weight with no critic of that kind to weigh would do nothing: refused. (The
    loop's configs name such weights before each round trains the critics; a search runs as given.)"""
    from alphallm.critics.critic_meta import KINDS

    for kind in KINDS:
        weight = config.weights.get(kind, 0.0)
        if weight > 0 and kind not in config.critic_dirs:
            raise UserError(
                f"weight {kind}={weight:g}: no {kind} critic to weigh; give --critic {kind}=DIR "
                "(train-critic --out) or drop the weight"
            )


def run(args: argparse.Namespace) -> int:
    from alphallm.chunks import chunks_beside
    from alphallm.commands._ui import append_jsonl, console, print_table, progress_bar
    from alphallm.commands.eval_cmd import (
        chosen_model,
        default_out,
        problems_label,
        select_problems,
        settings_label,
    )
    from alphallm.io import check_out_dir, check_out_file, write_json
    from alphallm.lm import load_lm
    from alphallm.lm.loading import pinned_model_path
    from alphallm.tasks import get_task

    config = build_config(args)
    _check_learned_weights(config)
    distributed = ray_config(args)
    task = get_task(args.task)
    problems = select_problems(task, args)
    model = chosen_model(args.model, task.name)
    # The other models by what they are now too, as chosen_model names the policy: a link's target, the
    # model a server holds; the results' name, record and resume fingerprint follow them.
    args.rollout_model = args.rollout_model and pinned_model_path(args.rollout_model)
    config = replace(config, anchor=config.anchor and pinned_model_path(config.anchor))
    if args.chat_template:
        from alphallm.lm.loading import with_model_chat_template

        task = with_model_chat_template(task, model)
    # Both outputs are checked before the search: a bad path found after it would lose all of it.
    out = check_out_file(
        args.out
        or default_out(
            "search",
            task.name,
            model,
            config.method,
            settings_label(args, SEARCH_FLAGS) + problems_label(args),
        )
    )
    if args.save_trees:
        check_out_dir(args.save_trees, what="trees", flag="--save-trees")
    # Finished chunks stream into <out>.chunks/, so that rerunning a killed search resumes there; the
    # fingerprint of each chunk (settings, problems, the models' files) keeps other work from matching.
    chunks = chunks_beside(out)
    with progress_bar(f"{config.method} {task.name}", len(problems)) as advance:
        if distributed.enabled:
            from alphallm.distributed import solve_on_ray

            report = solve_on_ray(
                task,
                problems,
                model=model,
                config=config,
                ray_config=distributed,
                out_dir=chunks,
                rollout_model=args.rollout_model,
                keep_trees=bool(args.save_trees),
                progress=advance,
                device=args.device,
                dtype=args.dtype,
            )
        else:
            from alphallm.distributed import solve_in_chunks

            report = solve_in_chunks(
                task,
                problems,
                model=model,
                policy=load_lm(model, device=args.device, dtype=args.dtype),
                config=config,
                out_dir=chunks,
                rollout_model=args.rollout_model,
                rollout_lm=(
                    load_lm(args.rollout_model, device=args.device, dtype=args.dtype)
                    if args.rollout_model
                    else None
                ),
                keep_trees=bool(args.save_trees),
                progress=advance,
                device=args.device,
                dtype=args.dtype,
            )
    summary = report.summary()
    rows: dict[str, Any] = {"problems": summary["problems"], "accuracy": summary["accuracy"]}
    for name, usage in report.usage.items():
        rows[f"{name} generated tokens"] = usage["generated_tokens"]
        rows[f"{name} prefill tokens"] = usage["prefill_tokens"]
        rows[f"{name} model calls"] = usage["calls"]
    rows["mean tree nodes"] = round(summary["mean_nodes"], 1)
    rows["read-outs"] = ", ".join(f"{k}={v}" for k, v in sorted(summary["readouts"].items()))
    for name, accuracy in summary.get("compared_readouts", {}).items():
        rows[f"accuracy, read out by {name}"] = accuracy
    rows["wall seconds"] = round(report.wall_seconds, 2)
    print_table(f"{task.name} / {model_label(model)} / {config.method}", rows)
    results = [{k: v for k, v in vars(r).items() if k != "tree"} for r in report.results]
    what = {"task": task.name, "model": model, "rollout_model": args.rollout_model, **summary}
    write_json(
        out, {**what, "config": report.config, "results": results}
    )  # before the trees: the results are the smaller file, and the one every other command reads
    if args.save_trees:
        _save_trees(report, Path(args.save_trees), task=task.name, model=model)
        console.print(f"trees: {args.save_trees}")
    append_jsonl(
        out.parent / "log.jsonl",
        {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **what, "config": report.config},
    )
    # The chunks are in the results now; kept, they would only take disk.
    shutil.rmtree(chunks, ignore_errors=True)
    console.print(f"results: {out}")
    return 0


def _save_trees(report: Any, directory: Path, *, task: str, model: str) -> None:
    """Every tree with its outcome, and the settings that made them (``trees.write_trees``)."""
    from alphallm.trees import write_trees

    trees = [r.tree | {"correct": r.correct, "readout": r.readout} for r in report.results]
    about = (
        f"alphallm search --task {task} --model {model}: {len(trees)} problems; rerun with --config this file"
    )
    write_trees(directory, trees, settings=report.config, about=about)
