"""How well does a loop round's value critic rank held-out nodes, once the verifier's dead ends are known?

game24's learned value critics rank held-out success rates poorly (Spearman 0.07-0.33 against issue 4's
bar of 0.6; benchmarks/README.md), and most held-out nodes are states the tool verifier already knows
are dead: an illegal move, or numbers that can no longer make 24. The search never asks a value critic
about those: pruning with the verifier, it backs up 0 for a dead end. This scores round k's value
critic on the problems it held out when it trained (its saved holdout and seed over the same trees,
so the "alone" row repeats its training record), four ways: the critic alone, the verifier alone, the
critic with 0 on the verifier's dead ends (what the search backs up; ``alphallm eval-critic
--dead-ends``), and the critic on the live nodes only.

    python benchmarks/value_dead_ends.py --run runs/game24-retry-scratch --round 1

Prints a table and adds the run to ``results/value_dead_ends.json``.
"""

from __future__ import annotations

import sys
from typing import Any

from _sweep import append_result, open_run, run_parser

from alphallm.critics.learned import CriticModel
from alphallm.critics.tool import on_dead_ends, row_scores
from alphallm.loop import Loop
from alphallm.train.critic import CriticTrainConfig, critic_metrics, held_out_rows
from alphallm.train.critic_data import predict
from alphallm.train.labels import label_rows


def measure(loop: Loop, k: int) -> dict[str, Any]:
    trained = loop.critic_rounds(k)["value"]  # the value critic in use after round k
    critic = loop.critic_dir(trained, "value")
    model, tokenizer, meta = CriticModel.load(critic, device="cpu", dtype="float32")
    # The labels it trained on (every tree up to its round) and the same split of them.
    labels = label_rows("value", loop.trees(range(1, trained + 1)), loop.config.critics.min_samples)
    rows = held_out_rows(labels, CriticTrainConfig(**meta["config"]))
    learned = predict(model, tokenizer, rows)
    tool = row_scores(loop.task, rows)
    live = [i for i, verdict in enumerate(tool) if verdict != 0.0]
    return {
        "round": k,
        "critic": str(critic),
        "trained_in_round": trained,
        "rows": len(rows),
        "problems": len({r.group for r in rows}),
        "dead_ends": len(rows) - len(live),
        "zero_targets": sum(r.target == 0.0 for r in rows),
        "alone": critic_metrics("value", learned, rows),
        "verifier": critic_metrics("value", tool, rows),
        "with_dead_ends": critic_metrics("value", on_dead_ends(learned, tool), rows),
        "live_only": critic_metrics("value", [learned[i] for i in live], [rows[i] for i in live]),
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"round {result['round']}'s value critic (trained in round {result['trained_in_round']}): "
        f"{result['rows']} held-out rows of {result['problems']} problems, {result['dead_ends']} dead ends, "
        f"{result['zero_targets']} targets at 0",
        "| scored | rows | AUC | Spearman | ceiling (no ties) |",
        "|---|---|---|---|---|",
    ]
    for name in ("alone", "verifier", "with_dead_ends", "live_only"):
        m = result[name]
        lines.append(
            f"| {name.replace('_', ' ')} | {m['rows']:.0f} | {m['auc']:.3f} | {m['spearman']:.3f} | "
            f"{m['spearman_ceiling']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = run_parser(__doc__)
    parser.add_argument("--round", type=int, default=1, help="a round whose critics stage has finished")
    args = parser.parse_args(argv)
    loop = open_run(args.run)
    if not (loop.round_dir(args.round) / "critics.json").is_file():
        raise SystemExit(f"{args.run}: round {args.round} has no critics yet")
    result = measure(loop, args.round)
    print(table(result))
    append_result(args.out, "value_dead_ends.json", {"run": args.run, **result})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
