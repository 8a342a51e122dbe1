"""What a policy offers the search at the root: how many distinct first steps it samples, and how many
of them are good. A search can only choose among the options its policy proposes, so a policy whose
first steps collapse onto a few (after SFT on narrow data) searches worse even if its greedy answer
improves.

    python benchmarks/first_steps.py --task game24 --policies game24-base R/round-1/sft R/round-5/sft

For each policy and each of the first ``--problems`` test problems, ``--samples`` first steps at
``--temperature`` (one line each, the run's seed): the mean number of distinct steps per problem, of
distinct *good* steps, and the share of samples that are good. A step is good when the task's step
verifier accepts it and, where the task can tell (game24: ``solvable_after``, the exact solver), the
problem is still solvable after it. Prints a table and writes ``first_steps-<task>.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from alphallm.io import write_json
from alphallm.lm import load_lm
from alphallm.tasks import get_task
from alphallm.tasks.base import Problem, Task


def good(task: Task, problem: Problem, step: str) -> bool:
    """The step verifier accepts the step, and the problem stays solvable where the task can say."""
    if task.check_step(problem, "", step) is False:
        return False
    solvable = getattr(task, "solvable_after", None)
    return solvable is None or solvable(problem, step + "\n") is not False


def measure(
    task: Task, policy: str, problems: list[Problem], samples: int, temperature: float, seed: int
) -> dict[str, Any]:
    lm = load_lm(policy)
    states = [task.format_prompt(p) for p in problems]
    outs = lm.sample(states, n=samples, temperature=temperature, stop=["\n"], max_tokens=64, seed=seed)
    distinct, distinct_good, good_samples = [], [], 0
    for problem, completions in zip(problems, outs):
        steps = [c.text.strip() for c in completions]
        verdicts = {step: good(task, problem, step) for step in set(steps)}
        distinct.append(len(verdicts))
        distinct_good.append(sum(verdicts.values()))
        good_samples += sum(verdicts[step] for step in steps)
    n = len(problems)
    return {
        "policy": policy,
        "distinct": sum(distinct) / n,
        "distinct_good": sum(distinct_good) / n,
        "good_share": good_samples / (n * samples),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", required=True)
    parser.add_argument("--policies", nargs="+", required=True, help="model names or directories")
    parser.add_argument("--problems", type=int, default=50, help="the first N test problems")
    parser.add_argument("--samples", type=int, default=16, help="first steps sampled per problem")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    task = get_task(args.task)
    problems = task.problems("test")[: args.problems]
    results = []
    print(f"| policy | distinct first steps of {args.samples} | distinct good ones | share of samples good |")
    print("|---|---|---|---|")
    for policy in args.policies:
        r = measure(task, policy, problems, args.samples, args.temperature, args.seed)
        results.append(r)
        print(
            f"| {policy} | {r['distinct']:.2f} | {r['distinct_good']:.2f} | {r['good_share']:.2f} |",
            flush=True,
        )
    out = Path(args.out) / f"first_steps-{args.task}.json"
    write_json(
        out,
        {
            "task": args.task,
            "problems": len(problems),
            "samples": args.samples,
            "temperature": args.temperature,
            "seed": args.seed,
            "results": results,
        },
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
