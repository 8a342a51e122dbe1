"""``alphallm pretrain``: train a tiny base model for a task with the project's recipe."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from alphallm.errors import UserError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("pretrain", help="train a tiny base model from the task's teacher (CPU, minutes)")
    p.add_argument("--task", required=True, choices=("arith", "game24"))
    p.add_argument("--out", help="output directory (default ./<task>-base)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="optimizer steps (default: the shipped recipe's)")
    p.add_argument("--batch-size", type=int, help="documents per step")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--noise", type=float, help="teacher slip probability per step (arith)")
    p.add_argument("--eval-problems", type=int, help="test problems for the model card's greedy accuracy")
    p.add_argument("--hidden-size", type=int, help="model width (shipped: 192)")
    p.add_argument("--layers", type=int, dest="num_layers", help="transformer blocks (shipped: 4)")
    p.add_argument("--heads", type=int, dest="num_heads", help="attention heads (shipped: 6)")
    p.add_argument("--mlp", type=int, dest="intermediate_size", help="MLP width (shipped: 512)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from alphallm.commands._ui import console, print_table, progress_bar
    from alphallm.train.pretrain import RECIPES, PretrainConfig, pretrain

    overrides = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "noise": args.noise,
        "eval_problems": args.eval_problems,
        "hidden_size": args.hidden_size,
        "num_layers": args.num_layers,
        "num_heads": args.num_heads,
        "intermediate_size": args.intermediate_size,
    }
    recipe = dict(RECIPES[args.task]) | {k: v for k, v in overrides.items() if v is not None}
    try:
        config = PretrainConfig(task=args.task, out=args.out or f"{args.task}-base", seed=args.seed, **recipe)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    command = "alphallm " + shlex.join(sys.argv[1:] if sys.argv[0].endswith("alphallm") else ["pretrain"])
    with progress_bar(f"pretrain {args.task}", config.steps) as advance:
        card = pretrain(config, command=command, on_step=lambda step, loss: advance(1))
    print_table(f"{card['name']}: greedy on test", card["greedy_test"]["metrics"])
    console.print(f"model: {config.out}  ({card['parameters']:,} parameters, {card['train_seconds']} s)")
    return 0
