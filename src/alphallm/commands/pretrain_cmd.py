"""``alphallm pretrain``: train a tiny base model for a task with the project's recipe."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from alphallm.commands._flags import finite_float
from alphallm.errors import UserError

# The recipe options a command may override: (flag, argparse destination).
FLAGS = (
    ("--steps", "steps"),
    ("--batch-size", "batch_size"),
    ("--lr", "lr"),
    ("--noise", "noise"),
    ("--eval-problems", "eval_problems"),
    ("--hidden-size", "hidden_size"),
    ("--layers", "num_layers"),
    ("--heads", "num_heads"),
    ("--mlp", "intermediate_size"),
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("pretrain", help="train a tiny base model from the task's teacher (CPU, minutes)")
    p.add_argument("--task", required=True, choices=("arith", "game24"))
    p.add_argument(
        "--out",
        help="output directory (default ./<task>-base; --model ./<task>-base loads it, not the shipped one)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="optimizer steps (default: the shipped recipe's)")
    p.add_argument("--batch-size", type=int, help="documents per step")
    p.add_argument("--lr", type=finite_float, help="peak learning rate")
    p.add_argument("--noise", type=finite_float, help="teacher slip probability per step (arith)")
    p.add_argument("--eval-problems", type=int, help="test problems for the model card's greedy accuracy")
    p.add_argument("--hidden-size", type=int, help="model width (shipped: 192)")
    p.add_argument("--layers", type=int, dest="num_layers", help="transformer blocks (shipped: 4)")
    p.add_argument("--heads", type=int, dest="num_heads", help="attention heads (shipped: 6)")
    p.add_argument("--mlp", type=int, dest="intermediate_size", help="MLP width (shipped: 512)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from alphallm.commands._ui import console, print_table, progress_bar
    from alphallm.train.checkpoint import steps_to
    from alphallm.train.pretrain import NOISY_TEACHERS, RECIPES, PretrainConfig, pretrain

    if args.noise is not None and args.task not in NOISY_TEACHERS:
        raise UserError(
            f"--noise is for --task {' or '.join(NOISY_TEACHERS)} (the {args.task} teacher never slips)"
        )
    overrides = {dest: getattr(args, dest) for _, dest in FLAGS}
    recipe = dict(RECIPES[args.task]) | {k: v for k, v in overrides.items() if v is not None}
    try:
        config = PretrainConfig(task=args.task, out=_out(args), seed=args.seed, **recipe)
    except ValueError as exc:
        raise UserError(_as_flags(str(exc))) from None
    command = _command(args)
    with progress_bar(f"pretrain {args.task}", config.steps) as advance:
        card = pretrain(config, command=command, on_step=steps_to(advance))
    print_table(f"{card['name']}: greedy on test", card["greedy_test"]["metrics"])
    resumed = f"; resumed at step {card['resumed_at_step']}" if "resumed_at_step" in card else ""
    console.print(
        f"model: {config.out}  ({card['parameters']:,} parameters, {card['train_seconds']} s{resumed})"
    )
    return 0


def _out(args: argparse.Namespace) -> str:
    """``--out``, by default ``./<task>-base``: written with ``./``, since ``--model arith-base`` names the
    shipped model and ``--model ./arith-base`` this directory."""
    return args.out or f"./{args.task}-base"


def _as_flags(message: str) -> str:
    """A config error that starts with a field name, starting with the flag that set it instead (the
    user typed ``--lr``, not ``lr``)."""
    name, sep, rest = message.partition(" ")
    flag = next((flag for flag, dest in FLAGS if dest == name), None)
    return f"{flag}{sep}{rest}" if flag else message


def _command(args: argparse.Namespace) -> str:
    """The command that makes this model again, for its card: rebuilt from the parsed options, so it is
    exact however the CLI was started (``alphallm``, ``python -m alphallm`` or ``main([...])``)."""
    words = ["alphallm", "pretrain", "--task", args.task, "--out", _out(args)]
    if args.seed:
        words += ["--seed", str(args.seed)]
    for flag, dest in FLAGS:
        value = getattr(args, dest)
        if value is not None:
            words += [flag, str(value)]
    return shlex.join(words)
