"""Can step-DPO teach a retrying game24 policy not to write an abandoned attempt again?

A retrying policy (``learn.retry_mix``; ``retry_traces``) decoded greedily often writes, after ``back``,
the very attempt it has just abandoned, and loops until its tokens run out (round 4 of the
from-scratch retry run: every one of its 28 unanswered misses). Its SFT rows never do that, yet SFT
does not teach the policy to avoid it. Here each of a round's verified solutions gives one preference
pair at the retry point before it:

    state     prompt + 1-3 of the policy's own failed attempts, each followed by ``back``
    chosen    the solution's first two steps (they lead to 24)
    rejected  one of the abandoned attempts, written again (two steps that make 24 unreachable)

Neither side ends the solution, so no EOS follows (``Pair(terminal=False)``). The policy is trained
with the package's step-DPO (``alphallm.train.dpo``; the reference is the policy itself, the NLL on
the chosen side weighted 1 as in the loop) and decoded greedily on the test puzzles before and after.

    python benchmarks/retry_repeats.py --run runs/game24-retry-scratch --round 4 --lr 5e-5

Prints a table and appends an entry to ``retry_repeats.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from _sweep import append_result
from retry_traces import BACK, TASK, measure

from alphallm.lm.hf import TransformersLM
from alphallm.lm.loading import load_causal_lm
from alphallm.report.stats import paired_change
from alphallm.train.dpo import DPOConfig, Pair, dpo
from alphallm.train.retry import failed_attempts


def repeat_pairs(rows: list[tuple[str, str]], fails: dict[str, list[str]], seed: int) -> list[Pair]:
    """One pair per row whose prompt has a failed attempt that does not start like its solution."""
    rng = random.Random(seed)
    pairs = []
    for prompt, solution in rows:
        lines = solution.split("\n")
        if len(lines) < 3:
            continue
        usable = [a for a in fails.get(prompt, []) if not a.startswith(lines[0] + "\n")]
        if not usable:
            continue
        tried = rng.sample(usable, min(rng.choice([1, 1, 2, 3]), len(usable)))
        # Greedy most often repeats the attempt it has just abandoned (102 of 177 repeats in round 4).
        rejected = tried[-1] if rng.random() < 0.6 else rng.choice(tried)
        state = prompt + "".join(attempt + BACK for attempt in tried)
        pairs.append(Pair(state, lines[0] + "\n" + lines[1] + "\n", rejected, terminal=False))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="a game24 loop run whose policy retries")
    parser.add_argument("--round", type=int, required=True, help="its round: policy and verified rows")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--samples", type=int, default=8, help="policy samples per puzzle for failed attempts"
    )
    parser.add_argument("--max-tokens", type=int, default=400, help="greedy decoding budget per puzzle")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    round_dir = Path(args.run) / f"round-{args.round}"
    rows = [(p, s) for p, s in json.loads((round_dir / "data.json").read_text())["sft"]]
    model, tokenizer = load_causal_lm(str(round_dir / "policy"), dtype="float32")
    prompts = list(dict.fromkeys(p for p, _ in rows))
    fails = failed_attempts(TASK, TransformersLM(model, tokenizer), prompts, samples=args.samples, seed=7)
    pairs = repeat_pairs(rows, fails, seed=0)
    test = TASK.problems("test")[:100]
    before = measure(model, tokenizer, test, args.max_tokens)
    started = time.perf_counter()
    config = DPOConfig(beta=args.beta, lr=args.lr, epochs=args.epochs, batch_size=16, sft_weight=1.0, seed=0)
    trained = dpo(model, None, tokenizer, pairs, config=config)  # reference: its own starting weights
    seconds = time.perf_counter() - started
    after = measure(model, tokenizer, test, args.max_tokens)
    change = paired_change(before["solved"], after["solved"])
    print(f"\ngame24, {args.run} round {args.round}: {len(pairs)} pairs, beta {args.beta}, lr {args.lr}")
    print(f"  {'policy':28s} greedy  legal steps  unanswered  repeating  tokens")
    for name, r in (("before", before), ("after step-DPO", after)):
        print(
            f"  {name:28s} {r['greedy']:.2f}    {r['legal_step_rate']:.3f}        {r['unanswered']:3d}"
            f"         {r['repeating']:3d}     {r['tokens_per_puzzle']:.0f}"
        )
    print(f"  change {change['change']:+.2f} ± {change['se']:.3f} (z {change['z']:+.1f})")
    entry = {"args": vars(args), "pairs": len(pairs), "dpo": trained, "dpo_seconds": round(seconds, 1)}
    append_result(
        args.out, "retry_repeats.json", {**entry, "before": before, "after": after, "change": change}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
