"""Critics trained from search trees: their quality on held-out problems and their effect on search.

    python benchmarks/critics.py [--tasks arith game24] [--train-problems 300] [--dev-problems 120]
                                 [--label-rollouts 2] [--dev-label-rollouts N]
                                 [--test-problems 100] [--sweep-problems 100] [--max-rows 8000]
                                 [--confidence arith] [--token-evidence arith] [--backbone arith=DIR]
                                 [--negatives N]

For each task, with the shipped base model:
1. search train-split and dev-split problems with eta-MCTS and fast rollouts, saving the trees
   (the verifier labels every terminal and rollout);
2. train a value, a PRM and an ORM critic on the train trees (``alphallm train-critic``; for the
   tasks in ``--confidence``, a frozen backbone whose head also reads the base model's own token
   log-probs, ``--confidence``: arith's errors are the policy's slips; with ``--token-evidence`` also a
   second head over every solution token, pooled by a soft maximum). The backbone is the base
   model unless ``--backbone TASK=DIR`` names another, such as a self-improved policy from
   ``runs/bench-improve``: the trees, the labels and the searching policy stay the base model's;
   with ``--negatives N`` the ORM also trains on N wrong variants of every correct solution;
3. measure them on the dev trees (``alphallm eval-critic``): ORM AUC, PRM step AUC, value Spearman
   and calibration;
4. run eta-MCTS on test problems three ways at the same number of simulations: no critics, the
   learned critics with no verifier (rollouts scored by the ORM; read out by the best-scored
   solution, and the same trees by a vote over the answers weighted by their scores), and the tool
   verifier;
5. run it with the learned critics and the PRM as a soft verifier (a step it scores at most tau is a
   dead end; tau chosen among ``PRUNE_THRESHOLDS`` on dev problems);
6. run it with no critics again at the learned critics' compute: a root as wide as
   ``MATCHED_ROOT_WIDTHS`` needs to generate as many tokens, and a majority vote.

Everything goes under ``--work`` (default runs/bench-critics); prints tables and writes
``critics.json`` beside the other benchmark results.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from alphallm.cli import main as alphallm
from alphallm.critics.critic_meta import KINDS
from alphallm.io import write_json, write_text

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "search"

# Default problems per split and rows per critic; other values get their own directory names.
DEFAULT_PROBLEMS = {"train": 300, "dev": 120}
DEFAULT_MAX_ROWS = 8000
DEFAULT_TEST_PROBLEMS = 100
DEFAULT_SWEEP_PROBLEMS = 100  # dev problems on which the PRM's pruning threshold is chosen

LEARNED: dict[str, Any] = {"weights": {"value": 1.0, "prm": 1.0, "orm": 1.0, "rollout": 1.0}, "prune": False}
SEARCH_MODES: dict[str, dict[str, Any]] = {
    # No critic can judge anything: every value is neutral and the answer is a majority vote.
    "no critics": {"weights": {}, "rollouts": 0, "readout": "majority", "prune": False},
    # Learned critics only; rollouts scored by the learned ORM; no verifier at test time. Its trees are
    # also read out by a vote over their answers weighted by their scores (the game24 configs'
    # evaluate.critics_readout: there the best-scored text is too often a wrong one the ORM rates
    # highly), reported as "learned critics, vote" (VOTED): the same search, so the same tokens.
    "learned critics": {**LEARNED, "compare_readouts": ["vote"]},
    # The tool verifier (and rollouts it scores): the reference.
    "tool verifier": {},
}
VOTED = "learned critics, vote"
# Pruning thresholds of the learned PRM tried on dev problems (its scores of dead and live steps on the
# dev trees: benchmarks/README.md, "The learned PRM as a soft verifier").
PRUNE_THRESHOLDS = (0.05, 0.1, 0.2)
# Root widths of the critic-free search, tried in order until it spends the learned critics' tokens.
MATCHED_ROOT_WIDTHS = (4, 8, 16, 32, 64)


def _cli(*args: str) -> None:
    print("$ alphallm " + " ".join(args), flush=True)
    if alphallm(list(args)) != 0:
        raise SystemExit(f"alphallm {args[0]} failed")


def _search_config(task: str, work: Path, extra: dict[str, Any]) -> Path:
    base = yaml.safe_load((CONFIGS / f"{task}.yaml").read_text())
    merged = {**base, **extra, "mcts": {**base.get("mcts", {}), **extra.get("mcts", {})}}
    digest = hashlib.blake2b(json.dumps(extra, sort_keys=True).encode(), digest_size=4).hexdigest()
    path = work / f"search-{task}-{digest}.yaml"
    write_text(path, yaml.safe_dump(merged))
    return path


def _pairs(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, str]:
    pairs = dict(item.split("=", 1) for item in items if "=" in item)
    if len(pairs) != len(items):
        parser.error(f"--backbone takes TASK=DIR, got: {' '.join(items)}")
    return pairs


def _backbone_tag(task: str, backbone: str) -> str:
    """'' for the base model, else a short digest of the backbone's path (the critics' directory name)."""
    if backbone == f"{task}-base":
        return ""
    return "-bb" + hashlib.blake2b(backbone.encode(), digest_size=3).hexdigest()


def run_task(task: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"task": task}
    # 1. Trees with many verified outcomes: sampled rollouts at every node (two by default; more give
    # success rates with fewer ties and less luck). The held-out trees may take more rollouts than the
    # training trees: they are what the critics are measured against.
    # Directory names carry every setting that changes the trees (default settings keep the old names),
    # so a run with other settings never picks up trees built for these.
    tags = {}
    for split, limit, rollouts in (
        ("train", args.train_problems, args.label_rollouts),
        ("dev", args.dev_problems, args.dev_label_rollouts or args.label_rollouts),
    ):
        out[{"train": "label_rollouts", "dev": "dev_label_rollouts"}[split]] = rollouts
        out[f"{split}_problems"] = limit
        tag = "" if rollouts == 2 else f"-r{rollouts}"
        tags[split] = tag = tag + ("" if limit == DEFAULT_PROBLEMS[split] else f"-n{limit}")
        trees = work / f"{task}-{split}-trees{tag}"
        if not trees.exists():
            data_config = _search_config(
                task, work, {"rollouts": rollouts, "rollout_temperature": 1.0, "batch_size": 64}
            )
            _cli(
                "search",
                "--task",
                task,
                "--split",
                split,
                "--limit",
                str(limit),
                "--config",
                str(data_config),
                "--save-trees",
                str(trees),
                "--out",
                str(work / f"{task}-{split}-search{tag}.json"),
            )
    tag = tags["train"]
    # 2-3. Critics and their held-out quality.
    confidence = task in args.confidence
    backbone = args.backbone.get(task, f"{task}-base")
    out["backbone"] = backbone
    tokens = confidence and task in args.token_evidence
    out["max_rows"] = args.max_rows
    rows_tag = "" if args.max_rows == DEFAULT_MAX_ROWS else f"-m{args.max_rows}"
    suffix = (
        ("-tokens" if tokens else "-confidence" if confidence else "")
        + tag
        + rows_tag
        + _backbone_tag(task, backbone)
    )
    # A frozen backbone trains only its head: more epochs at a higher rate cost less than full tuning.
    settings = ["--epochs", str(args.epochs)]
    if confidence:
        settings = ["--confidence", "--epochs", str(args.epochs + 2), "--lr", "1e-3"]
        settings += ["--token-evidence"] if tokens else []
    out["confidence"] = confidence
    out["token_evidence"] = tokens
    out["negatives"] = args.negatives
    suffixes = {kind: suffix for kind in KINDS}
    if args.negatives:  # only the ORM reads them: the value and step critics stay the same ones
        suffixes["orm"] = f"{suffix}-neg{args.negatives}"
    for kind in KINDS:
        critic = work / f"{task}-{kind}{suffixes[kind]}"
        negatives = ["--negatives", str(args.negatives)] if kind == "orm" and args.negatives else []
        if not critic.exists():
            _cli(
                "train-critic",
                "--kind",
                kind,
                "--trees",
                str(work / f"{task}-train-trees{tag}"),
                "--base",
                backbone,
                "--out",
                str(critic),
                *settings,
                *negatives,
                "--max-rows",
                str(args.max_rows),
            )
        metrics_path = work / f"{task}-{kind}{suffixes[kind]}-dev{tags['dev']}.json"
        _cli(
            "eval-critic",
            "--critic",
            str(critic),
            "--trees",
            str(work / f"{task}-dev-trees{tags['dev']}"),
            "--out",
            str(metrics_path),
        )
        out[kind] = json.loads(metrics_path.read_text())
    # 4. Search with and without critics at equal simulations.
    out["search"] = {}
    out["test_problems"] = args.test_problems
    out["sweep_problems"] = args.sweep_problems
    learned_flags = []
    for kind in KINDS:
        learned_flags += ["--critic", f"{kind}={work / f'{task}-{kind}{suffixes[kind]}'}"]
    searched = suffixes["orm"]  # in the searches' names: which critics they used
    for mode, extra in SEARCH_MODES.items():
        flags = learned_flags if mode == "learned critics" else []
        name = f"{mode.replace(' ', '-')}{searched if flags else ''}"
        out["search"][mode] = _search(task, args, work, extra, flags, name)
        if "compare_readouts" in extra:
            out["search"][VOTED] = {
                **out["search"][mode],
                "accuracy": out["search"][mode]["compared"]["vote"],
            }

    # 5. The learned PRM as a soft verifier: a step it scores at most tau is a dead end, with tau
    # chosen on dev problems (never on the test problems it is reported on).
    def prune_below(tau: float) -> dict[str, Any]:
        return {**LEARNED, "prune": True, "prune_with": "prm", "prune_below": tau}

    sweep = [
        {
            **_search(
                task, args, work, prune_below(t), learned_flags, f"learned-critics{searched}-prune{t}", "dev"
            ),
            "prune_below": t,
        }
        for t in PRUNE_THRESHOLDS
    ]
    tau = max(sweep, key=lambda r: (r["accuracy"], -r["generated_tokens"]))["prune_below"]
    pruned = _search(
        task, args, work, prune_below(tau), learned_flags, f"learned-critics{searched}-prune{tau}"
    )
    out["search"]["learned critics, PRM prunes"] = {**pruned, "prune_below": tau, "dev_sweep": sweep}
    # 6. No critics at the learned critics' compute. With every value neutral nothing widens, so at
    # equal simulations the critic-free tree is little more than the greedy chain; the bar compares at
    # equal compute, so a wider root buys it at least as many tokens: that many chains (the first
    # greedy, the rest sampled), enough simulations to finish each, and a majority vote.
    target = max(out["search"][mode]["generated_tokens"] for mode in out["search"] if "learned" in mode)
    ladder = []
    for width in MATCHED_ROOT_WIDTHS:
        mcts = {"c_min_root": width, "c_max_root": width, "c_min": 1, "num_simulations": width * 12}
        extra = {**SEARCH_MODES["no critics"], "mcts": mcts}
        ladder.append({**_search(task, args, work, extra, [], f"no-critics-root{width}"), **mcts})
        if ladder[-1]["generated_tokens"] >= target:
            break
    out["search"]["no critics, matched tokens"] = {**ladder[-1], "ladder": ladder}
    return out


def _search(
    task: str,
    args: argparse.Namespace,
    work: Path,
    extra: dict[str, Any],
    critic_flags: list[str],
    name: str,
    split: str = "test",
) -> dict[str, Any]:
    """eta-MCTS over the test (or dev) problems with the task's config and ``extra``; cached by
    ``name`` and the number of problems, when not the default."""
    limit = args.test_problems if split == "test" else args.sweep_problems
    default = DEFAULT_TEST_PROBLEMS if split == "test" else DEFAULT_SWEEP_PROBLEMS
    result = work / f"{task}-{split}-{name}{'' if limit == default else f'-t{limit}'}.json"
    data = json.loads(result.read_text()) if result.exists() else None
    if data is not None and set(extra.get("compare_readouts", [])) <= set(data.get("compared_readouts", {})):
        # like the trees and the critics: delete the file to search again
        print(f"{result} exists: not searched again", flush=True)
    else:
        config = _search_config(task, work, extra)
        _cli(
            "search",
            "--task",
            task,
            "--split",
            split,
            "--limit",
            str(limit),
            "--config",
            str(config),
            *critic_flags,
            "--out",
            str(result),
        )
        data = json.loads(result.read_text())
    return {
        "accuracy": data["accuracy"],
        "generated_tokens": data["generated_tokens"],
        "prefill_tokens": data["prefill_tokens"],
        "usage": data["usage"],
        **({"compared": data["compared_readouts"]} if "compared_readouts" in data else {}),
    }


def _save(path: Path, args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    """Adds this run's results to the file, replacing earlier ones of the same task and settings."""

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (
            r["task"],
            r.get("confidence", False),
            r.get("token_evidence", False),
            r.get("label_rollouts", 2),
            r.get("dev_label_rollouts", r.get("label_rollouts", 2)),
            r.get("backbone", f"{r['task']}-base"),
            r.get("train_problems", DEFAULT_PROBLEMS["train"]),
            r.get("dev_problems", DEFAULT_PROBLEMS["dev"]),
            r.get("max_rows", DEFAULT_MAX_ROWS),
            r.get("negatives", 0),
            r.get("test_problems", DEFAULT_TEST_PROBLEMS),
            r.get("sweep_problems", DEFAULT_SWEEP_PROBLEMS),
        )

    kept = json.loads(path.read_text())["results"] if path.exists() else []
    fresh = {key(r) for r in results}
    merged = [r for r in kept if key(r) not in fresh] + [{**r, "args": vars(args)} for r in results]
    write_json(path, {"results": merged})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=["arith", "game24"])
    parser.add_argument(
        "--train-problems",
        type=int,
        default=DEFAULT_PROBLEMS["train"],
        help="train-split problems searched for the label trees",
    )
    parser.add_argument(
        "--dev-problems",
        type=int,
        default=DEFAULT_PROBLEMS["dev"],
        help="dev-split problems the critics are measured on",
    )
    parser.add_argument(
        "--test-problems", type=int, default=DEFAULT_TEST_PROBLEMS, help="test problems every search solves"
    )
    parser.add_argument(
        "--sweep-problems",
        type=int,
        default=DEFAULT_SWEEP_PROBLEMS,
        help="dev problems on which the PRM's pruning threshold is chosen",
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--label-rollouts", type=int, default=2, help="sampled rollouts per node in the label trees"
    )
    parser.add_argument(
        "--dev-label-rollouts",
        type=int,
        default=None,
        help="rollouts per node in the held-out trees the critics are measured on "
        "(default: --label-rollouts)",
    )
    parser.add_argument(
        "--max-rows", type=int, default=DEFAULT_MAX_ROWS, help="most rows each critic trains on"
    )
    parser.add_argument(
        "--confidence",
        nargs="*",
        default=["arith"],
        help="tasks whose critics also read the base model's token log-probs (frozen backbone)",
    )
    parser.add_argument(
        "--token-evidence",
        nargs="*",
        default=[],
        help="tasks (among --confidence) whose critics also score every solution token",
    )
    parser.add_argument(
        "--backbone",
        nargs="*",
        default=[],
        metavar="TASK=DIR",
        help="the critics' backbone for a task (default: the shipped base model)",
    )
    parser.add_argument(
        "--negatives",
        type=int,
        default=0,
        help="wrong variants of each correct solution added to the ORM's rows (train-critic --negatives)",
    )
    parser.add_argument("--work", default="runs/bench-critics")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    args.backbone = _pairs(parser, args.backbone)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = [run_task(task, args, work) for task in args.tasks]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _save(out / "critics.json", args, results)
    print(
        f"\n{'task':8s} {'critic':6s} {'AUC':>6s} {'Spearman':>9s} {'ceiling':>8s} {'ECE':>6s} {'rows':>6s}"
    )
    for r in results:
        for kind in KINDS:
            m = r[kind]
            print(
                f"{r['task']:8s} {kind:6s} {m['auc']:6.3f} {m.get('spearman', float('nan')):9.3f} "
                f"{m.get('spearman_ceiling', float('nan')):8.3f} "
                f"{m.get('ece', float('nan')):6.3f} {int(m['rows']):6d}"
            )
    print(f"\n{'task':8s} {'search':28s} {'accuracy':>8s} {'gen tokens':>11s} {'prefill':>9s}")
    for r in results:
        for mode, s in r["search"].items():
            print(
                f"{r['task']:8s} {mode:28s} {s['accuracy']:8.3f} {s['generated_tokens']:11d} "
                f"{s['prefill_tokens']:9d}"
            )
    print(f"\nwrote {out / 'critics.json'} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
