"""``alphallm``: the command line. Thin: each subcommand parses flags and calls the library.

Heavy libraries (torch, transformers) are imported inside the commands, so ``--help`` is instant.
Errors the user can fix become one line on stderr and exit status 2, in one place (``main``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from alphallm.errors import UserError

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    from alphallm import __version__
    from alphallm.commands import (
        compare_cmd,
        critic_cmd,
        eval_cmd,
        improve_cmd,
        pretrain_cmd,
        search_cmd,
        serve_cmd,
        viz_cmd,
    )

    parser = argparse.ArgumentParser(
        prog="alphallm",
        description="Self-improving language models: imagine, search (eta-MCTS), criticize, learn.",
    )
    parser.add_argument("--version", action="version", version=f"alphallm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    improve_cmd.add_parsers(sub)
    eval_cmd.add_parser(sub)
    search_cmd.add_parser(sub)
    viz_cmd.add_parser(sub)
    compare_cmd.add_parser(sub)
    critic_cmd.add_parsers(sub)
    pretrain_cmd.add_parser(sub)
    serve_cmd.add_parser(sub)
    return parser


def _empty_flag(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """The first option given an empty or blank string (alone or in a list), which every command would
    read as not given or could not use; None when there is none."""

    def blank(value: object) -> bool:
        return isinstance(value, str) and not value.strip()

    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for action in commands[args.command]._actions:
        value = getattr(args, action.dest, None)
        if blank(value) or (isinstance(value, list) and any(map(blank, value))):
            return action.option_strings[-1] if action.option_strings else str(action.metavar or action.dest)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns the process exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    empty = _empty_flag(parser, args)
    if empty:  # --model "$MODEL" with MODEL unset took the default model without a word
        print(f"alphallm: error: {empty}: empty value", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not sys.stderr.isatty():
        # In a log file (nohup, a cluster job) the hub's and transformers' tqdm bars are \r-joined
        # noise: a five-round run logged "Loading weights" 161 times. Our own stages print plain
        # progress lines there instead (commands/_ui.py). Set before transformers is imported.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        return int(args.run(args) or 0)
    except UserError as exc:
        print(f"alphallm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alphallm: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        from alphallm.extras import install_hint

        hint = install_hint([str(exc.name)])
        if not hint:  # not an optional dependency: a broken install or a bug, with its traceback
            raise
        print(f"alphallm: error: this needs {exc.name}: {hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
