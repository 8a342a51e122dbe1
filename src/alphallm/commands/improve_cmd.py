"""``alphallm improve`` and ``alphallm demo``: the self-improvement loop, resumable, with a report."""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path
from typing import Any

from alphallm.commands.search_cmd import add_ray_arguments, ray_config
from alphallm.errors import UserError

# The packaged configs/demo-<task>.yaml files; the first is the default.
DEMO_TASKS = ("game24", "arith")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("improve", help="run K rounds of imagine -> search -> criticize -> learn")
    p.add_argument("--config", required=True, help="YAML file of LoopConfig settings (see configs/)")
    p.add_argument("--resume", action="store_true", help="continue the run in runs/<name> where it stopped")
    p.add_argument("--name", help="run name (default: the config's)")
    p.add_argument("--rounds", type=int, help="number of rounds (default: the config's)")
    p.add_argument("--out-dir", help="parent directory of runs (default: the config's, usually runs)")
    add_ray_arguments(p)
    p.set_defaults(run=run_improve)

    d = sub.add_parser("demo", help="one round of the whole loop on a shipped model (6 to 12 min on 2 cores)")
    d.add_argument(
        "--task",
        choices=DEMO_TASKS,
        default=DEMO_TASKS[0],
        help="game24: the rules-only model learns strategy (6 to 12 min); arith: about 5 min",
    )
    d.add_argument("--out-dir", default="runs", help="parent directory of the demo run (runs/demo-TASK)")
    d.add_argument("--resume", action="store_true", help="continue an interrupted demo")
    d.set_defaults(run=run_demo)


class RichUI:
    """Progress bars and messages for the loop, on the console."""

    def progress(self, description: str, total: int) -> Any:
        from alphallm.commands._ui import progress_bar

        return progress_bar(description, max(1, total))

    def message(self, text: str) -> None:
        from alphallm.commands._ui import console

        console.print(f"[bold cyan]{time.strftime('%H:%M:%S')}[/] {text}")


def _run(config: Any, resume: bool) -> int:
    from alphallm.commands._ui import console, print_table
    from alphallm.io import InUseError
    from alphallm.lm.loading import KEPT_POLICY, pinned_model_path
    from alphallm.lm.served import is_served
    from alphallm.loop import Loop

    if is_served(config.policy):  # before _pin_links asks its server which model it holds
        raise UserError(f"policy: {config.policy} is served; the loop trains its policy, which must be local")
    config = _pin_links(config)
    started = config.run_dir.is_dir() and any(config.run_dir.iterdir())
    if started and not resume:
        raise UserError(
            f"{config.run_dir} exists: pass --resume to continue it, or another --name (demo: --out-dir) "
            "for a new run"
        )
    if resume and not started:  # a mistyped name or --out-dir would otherwise start a new run
        raise UserError(
            f"{config.run_dir}: no run to resume; check the run's name (--name; demo: --task) and "
            "--out-dir, or leave out --resume to start it"
        )
    # Made by this command: then a failure before its first stage may remove it again.
    created = not config.run_dir.exists()
    loop = Loop(config, ui=RichUI())
    if not (config.run_dir / "config.yaml").is_file():
        _check_inputs(loop)
    clock = time.perf_counter()
    try:
        with _ray_session(config):
            metrics = loop.run()
    except InUseError:
        raise  # another process made the directory in the meantime and runs in it: nothing here is ours
    except UserError:
        if created:
            _forget_unstarted(config.run_dir)
        raise
    report = loop.report()
    first, last = metrics[0], metrics[-1]
    rows: dict[str, Any] = {}
    for method in ("greedy", "mcts", "mcts_critics", "sc"):
        if method in last:
            before = f"{first[method]['accuracy']:.3f}" if method in first else "-"
            rows[f"{method} accuracy"] = f"{before} -> {last[method]['accuracy']:.3f}" + _noise(
                first.get(method), last[method]
            )
    rows["rounds"] = len(metrics) - 1
    # A resumed run's earlier sessions are not counted: the label says so.
    rows["wall minutes, this resume" if resume else "wall minutes"] = round(
        (time.perf_counter() - clock) / 60, 1
    )
    print_table(f"{config.name}: round 0 -> round {len(metrics) - 1} (test split)", rows)
    console.print(f"report: {report}")
    console.print(f"metrics: {config.run_dir / 'metrics.jsonl'}")
    kept = config.run_dir / KEPT_POLICY
    if kept.is_symlink():  # not while a starting policy from a hub is kept
        console.print(f"policy kept: {kept} -> {pinned_model_path(str(kept))}")
    return 0


def _pin_links(config: Any) -> Any:
    """The config with each model given as a link (another run's ``kept-policy``) named by what it links
    to now, and each served one by the model its server holds: a run resumed after that run moved on, or
    the server changed model, starts from the same policy and anchors."""
    from dataclasses import replace

    from alphallm.commands._ui import console
    from alphallm.lm.loading import pinned_model_path

    def pinned(key: str, name: str | None) -> str | None:
        now = None if name is None else pinned_model_path(name)
        if now != name:
            console.print(f"{key}: {name} is now {now}, which this run uses")
        return now

    def anchored(key: str, search: Any) -> Any:
        return replace(search, anchor=pinned(f"{key}.anchor", search.anchor))

    evaluate = replace(config.evaluate, search=anchored("evaluate.search", config.evaluate.search))
    policy = pinned("policy", config.policy)
    return replace(config, policy=policy, search=anchored("search", config.search), evaluate=evaluate)


def _check_inputs(loop: Any) -> None:
    """The models and problem files a new run names, checked before its directory exists: a run that
    failed on them later would leave a directory that a rerun is told to --resume."""
    from alphallm.lm.loading import resolve_model_path

    config = loop.config
    models = {"policy": config.policy, "search.anchor": config.search.anchor}
    models["evaluate.search.anchor"] = config.evaluate.search.anchor
    for key, name in models.items():
        if name is not None:
            try:
                resolve_model_path(name)
            except UserError as exc:
                raise UserError(f"{key}: {exc}") from None
    loop.read_problem_files()


# What a run writes before its first stage (io.exclusive's lock, loop_meta's record).
RUN_RECORD = (".lock", "config.yaml", "meta.json")


def _forget_unstarted(run_dir: Path) -> None:
    """Removes a new run that stopped on bad input before any stage wrote a file: only its record is
    lost, and a rerun with the input fixed starts it without --resume."""
    if not run_dir.is_dir() or any(p.name not in RUN_RECORD for p in run_dir.iterdir()):
        return
    for name in RUN_RECORD:
        (run_dir / name).unlink(missing_ok=True)
    run_dir.rmdir()


def _check_flags(args: argparse.Namespace) -> None:
    """A flag that is given overrides the config, even when it is 0, so it is checked here (an empty one
    is refused for every command, ``cli._empty_flag``)."""
    from alphallm.loop_config import is_plain_name

    if args.rounds is not None and args.rounds < 1:
        raise UserError(f"--rounds must be at least 1, not {args.rounds}")
    if args.name is not None and not is_plain_name(args.name):
        raise UserError(f"--name must be a plain directory name (no '/', not '.' or '..'), not {args.name!r}")


def _noise(before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    """`` (z +1.2)``: the change over its standard error, paired over the test problems both measured,
    so a reader sees whether it is more than noise (nothing when they share none)."""
    from alphallm.report.stats import paired_change

    try:
        change = paired_change((before or {}).get("solved", {}), after.get("solved", {}))
    except ValueError:
        return ""
    return f" (z {change['z']:+.1f})"


def _ray_session(config: Any) -> Any:
    """One Ray session for every stage of the run (not a cluster start per stage)."""
    from contextlib import nullcontext

    if not config.ray.enabled:
        return nullcontext()
    from alphallm.distributed import ray_session

    return ray_session(config.ray)


def run_improve(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from alphallm.loop_config import load_config

    _check_flags(args)
    given = {"name": args.name, "rounds": args.rounds, "out_dir": args.out_dir}
    config = load_config(args.config, {k: v for k, v in given.items() if v is not None})
    return _run(replace(config, ray=ray_config(args, config.ray)), args.resume)


def run_demo(args: argparse.Namespace) -> int:
    from alphallm.loop_config import load_config

    demo = resources.files("alphallm").joinpath(f"configs/demo-{args.task}.yaml")
    with resources.as_file(demo) as path:
        config = load_config(Path(path), {"out_dir": args.out_dir})
    return _run(config, args.resume)
