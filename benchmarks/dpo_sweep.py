"""Does step-DPO help at any setting? One finished loop round's DPO stage, re-run with variations.

    python benchmarks/dpo_sweep.py --run runs/bench-improve/arith-full --round 3

The loop's gate keeps SFT alone unless SFT + DPO scores higher on dev beyond twice the paired standard
error. This re-runs the round's DPO stage exactly as the loop did (the round's SFT model, its tree-derived
pairs, the previous round's kept policy as the reference, the round's DPO seed) and with one setting
changed at a time:

    loop            the run's DPO settings as they are (reproduces the gate's figure)
    lr / 4          a quarter of the learning rate
    beta 0.5        a stronger implicit KL (5x beta)
    no RPO          no NLL term on the chosen side
    reference SFT   the round's SFT model as its own reference (the margin starts at 0)
    1 epoch         half the passes

Each candidate is scored as the run's gate scores it (``evaluate.gate_metric``: greedy accuracy on the
run's dev problems, or the mean accuracy of sampled solutions), against SFT alone problem by problem, with
whether the gate would keep it. It also runs on a round of an SFT-only run (``learn.use_dpo: false``): the
``loop`` row then says what the default gate would have done there. Prints a table and writes
``dpo_sweep-<run>-round<k>.json``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from _sweep import finished_round, sweep_parser

from alphallm.io import write_json
from alphallm.lm.loading import save_causal_lm
from alphallm.loop import Loop
from alphallm.loop_learn import dpo_candidate, dpo_config
from alphallm.loop_solve import choose_beyond_noise
from alphallm.train.dpo import DPOConfig, Pair

VARIANTS: dict[str, tuple[dict[str, Any], bool]] = {  # name: (DPOConfig changes, reference = SFT model)
    "loop": ({}, False),
    "lr / 4": ({"lr_scale": 0.25}, False),
    "beta 0.5": ({"beta": 0.5}, False),
    "no RPO": ({"sft_weight": 0.0}, False),
    "reference SFT": ({}, True),
    "1 epoch": ({"epochs": 1}, False),
}


def run_variant(loop: Loop, k: int, pairs: list[Pair], name: str, sft: dict[str, float]) -> dict[str, Any]:
    """One DPO candidate's dev score, and its paired change over SFT alone (``sft``: per dev problem)."""
    changes, self_reference = VARIANTS[name]
    changes = dict(changes)
    base = dpo_config(loop, k)
    if "lr_scale" in changes:
        changes["lr"] = base.lr * changes.pop("lr_scale")
    config: DPOConfig = replace(base, **changes)
    model, tokenizer, metrics = dpo_candidate(loop, k, pairs, config, self_reference=self_reference)
    with tempfile.TemporaryDirectory() as tmp:
        save_causal_lm(model, tokenizer, Path(tmp) / "candidate")
        accuracy, by_problem = loop.dev_scores(str(Path(tmp) / "candidate"))
    choice = choose_beyond_noise({"sft": sft, "dpo": by_problem}, "sft")
    return {
        "variant": name,
        "dev_accuracy": accuracy,
        "over_sft": choice["changes"]["dpo"],
        "gate_keeps": choice["kept"] == "dpo",
        "final_margin": metrics["final"]["margin"],
        "final_pair_accuracy": metrics["final"]["accuracy"],
        "config": asdict(config),
        "reference": "sft" if self_reference else loop.policy(k - 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = sweep_parser(__doc__, VARIANTS).parse_args(argv)
    run, k = Path(args.run), args.round
    loop = finished_round(run, k)
    pairs = [Pair(**p) for p in json.loads((loop.round_dir(k) / "data.json").read_text())["pairs"]]
    gate = loop.gate(k)
    score = loop.config.evaluate.gate_score
    if gate["metric"] != score:  # the run changed its gate score since this round
        gate["previous_dev_accuracy"] = loop.kept_dev_accuracy(k - 1)
        gate["metric"] = score
    # scored again (a dev decoding), for its per-problem scores
    sft_accuracy, sft = loop.dev_scores(str(loop.round_dir(k) / "sft"))
    rows: list[dict[str, Any]] = [{"variant": "SFT alone (no DPO)", "dev_accuracy": sft_accuracy}]
    for name in args.variants:
        rows.append(run_variant(loop, k, pairs, name, sft))
        print(f"{name}: dev {score} {rows[-1]['dev_accuracy']:.3f}", flush=True)
    print(
        f"\n{run.name} round {k}: {len(pairs)} pairs, previous policy dev {gate['previous_dev_accuracy']:.3f}"
    )
    print(
        f"| DPO variant | dev {score} | − SFT alone ± se (z) | the gate keeps it | final margin "
        "| pairs ranked right |\n|---|---|---|---|---|---|"
    )
    for row in rows:
        margin, ranked = row.get("final_margin"), row.get("final_pair_accuracy")
        extra = f"{margin:.2f} | {ranked:.2f}" if margin is not None else "- | -"
        versus = "- | -"
        if c := row.get("over_sft"):
            keeps = "yes" if row["gate_keeps"] else "no"
            versus = f"{c['change']:+.3f} ± {c['se']:.3f} ({c['z']:+.1f}) | {keeps}"
        print(f"| {row['variant']} | {row['dev_accuracy']:.3f} | {versus} | {extra} |")
    out = Path(args.out) / f"dpo_sweep-{run.name}-round{k}.json"
    write_json(out, {"run": str(run), "round": k, "pairs": len(pairs), "gate": gate, "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
