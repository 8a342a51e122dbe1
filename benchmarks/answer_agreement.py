"""How often is the answer a policy's samples agree on right, and how many problems keep one?

The loop gives an imagined problem without a gold answer (gsm8k, math) the answer enough of the
policy's sampled solutions reach, and drops it otherwise (``imagine.answer_samples``,
``imagine.answer_agreement``; ``alphallm/imagine/answers.py``). This measures that rule where the
truth is known: a task's test problems with their answers hidden, ``--samples`` solutions each (the
first k of them stand for a draw of k), and for each k and agreement the share of problems that keep
an answer (*kept*) and the share of those whose answer is right (*right*). The policy's greedy and
single-sample accuracy are the references: a kept answer is worth training on only if it is right
more often than the policy already is.

    python benchmarks/answer_agreement.py --task arith --model arith-base   # about 2 min

Prints a table per model and adds the run to ``results/answer_agreement.json``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from _sweep import append_result

from alphallm.errors import UserError
from alphallm.evaluation import evaluate
from alphallm.imagine import agreed_answer
from alphallm.lm import load_lm
from alphallm.tasks import get_task

AGREEMENTS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def measure(
    task: Any, model: str, problems: list[Any], samples: list[int], temperature: float
) -> dict[str, Any]:
    lm = load_lm(model)
    greedy = evaluate(task, lm, problems, method="greedy").metrics["accuracy"]
    most = max(samples)
    hidden = [replace(p, answer=None) for p in problems]
    sampled = evaluate(task, lm, hidden, method="sample", n=most, temperature=temperature, seed=1)
    texts = [[r.solution for r in sampled.records[i * most : (i + 1) * most]] for i in range(len(problems))]
    single = sum(bool(task.check(p, t[0])) for p, t in zip(problems, texts)) / len(problems)
    rows = []
    for k in samples:
        for agreement in AGREEMENTS:
            kept = right = 0
            for problem, hidden_problem, all_texts in zip(problems, hidden, texts):
                answer = agreed_answer(task, hidden_problem, all_texts[:k], agreement=agreement)
                if answer is None:
                    continue
                kept += 1
                agreeing = replace(hidden_problem, answer=answer)
                # A sample that reaches the agreed answer is right exactly when that answer is.
                witness = next(t for t in all_texts[:k] if task.check(agreeing, t))
                right += bool(task.check(problem, witness))
            rows.append(
                {
                    "samples": k,
                    "agreement": agreement,
                    "kept": kept / len(problems),
                    "right": right / kept if kept else None,
                    "right_of_all": right / len(problems),
                }
            )
    return {
        "model": model,
        "problems": len(problems),
        "temperature": temperature,
        "greedy": greedy,
        "single_sample": single,
        "rows": rows,
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['model']}: {result['problems']} problems, T {result['temperature']}; "
        f"greedy {result['greedy']:.3f}, one sample {result['single_sample']:.3f}",
        f"{'samples':>7} {'agreement':>9} {'kept':>6} {'right':>6} {'right of all':>12}",
    ]
    for row in result["rows"]:
        right = "-" if row["right"] is None else f"{row['right']:.3f}"
        lines.append(
            f"{row['samples']:>7} {row['agreement']:>9.1f} {row['kept']:>6.3f} {right:>6} "
            f"{row['right_of_all']:>12.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="arith", help="a task whose test problems have gold answers")
    parser.add_argument("--model", nargs="+", default=["arith-base"], help="policies (shipped names or dirs)")
    parser.add_argument("--problems", type=int, default=200, help="test problems (the first N)")
    parser.add_argument("--samples", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    try:
        task = get_task(args.task)
        problems = task.problems("test")[: args.problems]
        if not problems or problems[0].answer is None:
            raise UserError(f"task {args.task!r}: its test problems need gold answers")
        results = [measure(task, m, problems, sorted(args.samples), args.temperature) for m in args.model]
    except UserError as error:
        raise SystemExit(str(error)) from None
    for result in results:
        print(table(result))
    append_result(args.out, "answer_agreement.json", {"task": args.task, "runs": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
