"""``alphallm eval``: decode whole solutions with a model and report accuracy and compute."""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from alphallm.commands._flags import finite_float
from alphallm.errors import UserError
from alphallm.lm.served import is_served


def add_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="accuracy of a model on a task (greedy or sampling)")
    p.add_argument("--task", required=True, help="arith, game24, gsm8k or math")
    p.add_argument(
        "--model",
        help="model directory, shipped model name, hub id or a server's URL, http://HOST:PORT/v1[#name] "
        "(default: <task>-base, the task's shipped model; gsm8k and math ship none)",
    )
    p.add_argument("--problems", help="JSONL file of your own problems (default: the task's split)")
    p.add_argument(
        "--split", choices=("train", "dev", "test"), help="built-in split (default test; not with --problems)"
    )
    p.add_argument("--limit", type=int, help="evaluate only the first N problems")
    p.add_argument("--method", default="greedy", choices=("greedy", "sample"))
    p.add_argument("--n", type=int, default=1, help="samples per problem for --method sample (pass@n, maj@n)")
    p.add_argument("--temperature", type=finite_float, default=1.0, help="sampling temperature")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64, help="problems decoded together")
    p.add_argument(
        "--max-tokens",
        type=int,
        help="tokens a solution may take (default: the task's; more for a policy that retries)",
    )
    add_model_arguments(p)
    p.add_argument(
        "--out",
        help="JSON file for the results (default runs/eval/<task>-<model>-<method>.json, "
        "with -n<N> before .json when --n is above 1, then -t<T>, -seed<S>, -tok<N> and -chat for "
        "those flags when given, then -dev, -train or -<problems file stem> "
        "and -first<N> with --limit; <model> is a local model directory's absolute path's last three "
        "parts joined by '-', as in X-round-2-policy)",
    )
    p.set_defaults(run=run)


def add_model_arguments(p: Any) -> None:
    """--device, --dtype and --chat-template, shared by the commands that load a policy."""
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument(
        "--dtype", default="auto", help="float32, bfloat16, float16 or auto (fp32 on CPU, bf16/fp16 on GPU)"
    )
    p.add_argument(
        "--chat-template",
        action="store_true",
        help="wrap prompts in the tokenizer's chat template (instruction-tuned models; off for base models)",
    )


def select_problems(task: Any, args: argparse.Namespace) -> list[Any]:
    """The problems a command works on: ``--problems FILE`` or ``--split``, cut to ``--limit``."""
    from alphallm.tasks import load_problems

    if args.problems and args.split:
        raise UserError("--problems and --split: give one (your file, or a built-in split)")
    if args.problems:
        problems = load_problems(task, args.problems, scored=True)
    else:
        problems = task.problems(args.split or "test")
    if args.limit is not None:
        if args.limit < 1:
            raise UserError("--limit must be at least 1")
        problems = problems[: args.limit]
    return problems


def chosen_model(model: str | None, task: str) -> str:
    """``--model``, or the task's shipped model. A link (a run's kept-policy) is taken as what it links to
    now, so that results are named and recorded by that round's candidate, not by a link that moves on;
    a server's URL as ``URL#<the model it serves now>``, not by an address another model takes later."""
    from alphallm.lm.loading import pinned_model_path, shipped_model

    model = model or shipped_model(task)
    if model is None:
        raise UserError(
            f"--model: task {task!r} ships no model; name a model directory, hub id or server URL"
        )
    return pinned_model_path(model)


def model_label(model: str) -> str:
    """``model`` as a part of a default output file name. A local directory gets the last three parts of
    its absolute path (``runs/X/round-2/policy`` -> ``X-round-2-policy``): its last part alone is the same
    for every round of every loop run, and their results would overwrite each other, and ``./arith-base``
    (``pretrain``'s default output) would take the shipped model's name. A shipped name or hub id keeps
    its last part (``arith-base``), and a served model is ``served-<host>-<port>-<model>``, with the last
    three parts of the served model's id (``chosen_model`` names it), which is often a path too."""
    from alphallm.lm.loading import is_shipped_name

    if is_served(model):
        url, _, served = model.partition("#")
        host = urlsplit(url).netloc.replace(":", "-")
        return "-".join(["served", host, *[part for part in served.split("/")[-3:] if part]])
    path = Path(os.path.normpath(model))
    if not path.is_dir() or is_shipped_name(model):  # a shipped name or a hub id
        return path.name
    absolute = Path(os.path.abspath(model))
    return "-".join(part for part in absolute.parts[-3:] if part != absolute.anchor)


def problems_label(args: argparse.Namespace) -> str:
    """The problems a run takes, as the end of a default output file name: nothing for the task's test
    split, else ``-dev``, ``-train`` or ``-<problems file stem>``, and ``-first<N>`` with ``--limit N``.
    Named by the flags alone, so a quick run on a few or other problems never overwrites the results of
    the whole test split, and the name says which problems a file holds."""
    label = f"-{Path(args.problems).stem}" if args.problems else ""
    if args.split and args.split != "test":
        label += f"-{args.split}"
    return label + (f"-first{args.limit}" if args.limit is not None else "")


# A settings flag as part of a default results name: how to write its value, and the value it has when
# not given. Eval's and search's tables (``EVAL_FLAGS``, ``search_cmd.SEARCH_FLAGS``) list the flags that
# change what a run computes, in the order their parts appear.
Flag = tuple[Callable[[Any], str], Any]

EVAL_FLAGS: dict[str, Flag] = {
    "n": (lambda n: f"n{n}", 1),
    "temperature": (lambda t: f"t{t:g}", 1.0),
    "seed": (lambda seed: f"seed{seed}", 0),
    "max_tokens": (lambda n: f"tok{n}", None),
    "chat_template": (lambda _: "chat", False),
}


def settings_label(args: argparse.Namespace, flags: dict[str, Flag]) -> str:
    """The settings flags given other values than their defaults, as part of a default results name
    (``--simulations 32 --weight tool=0`` -> ``-s32-tool0``): runs with other settings write other files,
    and the name says what was run. A label too long for a file name becomes a digest of itself."""
    parts = [
        write(getattr(args, dest)) for dest, (write, unset) in flags.items() if getattr(args, dest) != unset
    ]
    label = "".join(f"-{part}" for part in parts)
    return label if len(label) <= 80 else "-" + hashlib.sha256(label.encode()).hexdigest()[:12]


def default_out(kind: str, task: str, model: str, method: str, suffix: str = "") -> Path:
    """``runs/<kind>/<task>-<model>-<method><suffix>.json``, the results file when ``--out`` is not given."""
    return Path("runs", kind, f"{task}-{model_label(model)}-{method}{suffix}.json")


def run(args: argparse.Namespace) -> int:
    from alphallm.chunks import chunks_beside
    from alphallm.commands._ui import append_jsonl, console, print_table, progress_bar
    from alphallm.evaluation import eval_store, evaluate
    from alphallm.io import check_out_file, write_json
    from alphallm.lm import load_lm
    from alphallm.tasks import get_task

    if args.n < 1:
        raise UserError("--n must be at least 1")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise UserError("--max-tokens must be at least 1")
    if args.method == "sample" and args.temperature <= 0:
        raise UserError("--temperature must be positive for --method sample")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if args.method == "greedy" and args.n > 1:
        raise UserError("--n is the samples of --method sample; greedy decodes one solution")
    if args.temperature < 0:
        raise UserError("--temperature must be at least 0")
    task = get_task(args.task)
    problems = select_problems(task, args)
    model = chosen_model(args.model, task.name)
    # Checked before the model runs: a bad path found after the decoding would lose all of it.
    suffix = settings_label(args, EVAL_FLAGS) + problems_label(args)
    out = check_out_file(args.out or default_out("eval", task.name, model, args.method, suffix))
    if args.chat_template:  # as search does: the tokenizer alone, before the model loads or a server is asked
        from alphallm.lm.loading import with_model_chat_template

        task = with_model_chat_template(task, model)
    lm = load_lm(model, device=args.device, dtype=args.dtype)
    chunks = chunks_beside(out)  # rerunning a killed evaluation resumes there
    with progress_bar(f"eval {task.name} {args.method}", len(problems)) as advance:
        result = evaluate(
            task,
            lm,
            problems,
            method=args.method,
            n=args.n,
            temperature=args.temperature,
            batch_size=args.batch_size,
            seed=args.seed,
            max_tokens=args.max_tokens,
            progress=advance,
            store=eval_store(chunks, task, problems, model, device=args.device, **_settings(args)),
        )
    rows: dict[str, Any] = {"problems": result.problems, **result.metrics}
    rows.update({f"{k} tokens": v for k, v in result.usage.items() if k.endswith("tokens")})
    rows["wall seconds"] = round(result.wall_seconds, 2)
    print_table(
        f"{task.name} / {model_label(model)} / {args.method}" + (f" n={result.n}" if result.n > 1 else ""),
        rows,
    )
    summary = {"model": model, "argv": vars(args) | {"run": None}, **result.to_dict()}
    write_json(out, result.to_dict(with_records=True) | {"model": model})
    append_jsonl(out.parent / "log.jsonl", {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **summary})
    # The chunks are in the results now; kept, they would only take disk.
    shutil.rmtree(chunks, ignore_errors=True)
    console.print(f"results: {out}")
    return 0


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings a saved batch must share with this run (``eval_store``)."""
    return {
        name: getattr(args, name)
        for name in ("method", "n", "temperature", "seed", "max_tokens", "batch_size", "dtype")
    }
