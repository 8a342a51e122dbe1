"""A round's learned critics: trained on the labels of every tree so far, then gated twice. The held-out
gate keeps a critic in use when its retrained successor ranks held-out labels worse beyond noise; the
search gate (off by default) lets whole critic sets compete on what they are for, guiding search."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from alphallm.io import atomic_dir
from alphallm.loop_solve import critic_search_gate

if TYPE_CHECKING:
    from alphallm.loop import Loop

__all__ = ["critics_stage"]


def critics_stage(loop: Loop, k: int) -> dict[str, Any]:
    """Round k's critics (``round-k/critics.json``): each kind retrained on the labels of all trees so
    far, starting from the policy that made them; the held-out gate per kind (``critics.gate``), then,
    with ``critics.gate_search``, the search gate over whole sets."""
    from alphallm.lm.loading import load_causal_lm, model_files, training_dtype
    from alphallm.train.checkpoint import steps_to
    from alphallm.train.critic import critic_checkpoint, task_corrupter, train_critic, training_steps
    from alphallm.train.critic_gate import gate_retrained
    from alphallm.train.labels import label_rows, unlearnable

    settings = loop.config.critics
    if not settings.kinds or (not settings.refresh and k > 1):
        return {"trained": [], "frozen": not settings.refresh}
    by_round = {j: loop.trees(range(j, j + 1)) for j in range(1, k + 1)}
    trees = [tree for j in range(1, k + 1) for tree in by_round[j]]
    in_use = {kind: j for kind, j in loop.critic_rounds(k - 1).items() if kind in loop.critics(k - 1)}
    out: dict[str, Any] = {"trained": [], "kept": {}}
    for kind in settings.kinds:
        rows = label_rows(kind, trees, settings.min_samples)
        reason = unlearnable(rows, minimum=20)
        if reason:
            out[kind] = {"skipped": reason}
            if kind in in_use:  # nothing new to learn from: the critic in use stays
                out["kept"][kind] = in_use[kind]
            continue
        # Critics start from the policy that made the trees (the paper initialises them from the policy).
        config = replace(settings.train, seed=loop.seed(k, "critics"))
        dtype = training_dtype(loop.config.train_dtype, lora=config.lora_r > 0)
        base, tokenizer = load_causal_lm(loop.policy(k - 1), dtype=dtype)
        # A stage killed mid-training resumes from its last checkpoint (``train_critic``).
        files = model_files(loop.policy(k - 1))
        where = loop.critic_dir(k, kind).with_name(f"{kind}.checkpoint")
        checkpoint = critic_checkpoint(where, rows, kind, config, files=files, base=base)
        with loop.ui.progress(f"round {k} {kind} critic", training_steps(rows, config, kind)) as adv:
            model, metrics = train_critic(
                rows,
                base=base,
                tokenizer=tokenizer,
                kind=kind,
                config=config,
                on_step=steps_to(adv),
                corrupt=task_corrupter(loop.task) if kind == "orm" and config.negatives else None,
                checkpoint=checkpoint,
            )
        with atomic_dir(loop.critic_dir(k, kind)) as tmp:
            model.save(tmp, tokenizer, {"base": loop.policy(k - 1), "task": loop.task.name, **metrics})
        checkpoint.remove()
        # The stage record leaves out the critic's trained problems (its critic.json has them).
        out[kind] = {key: value for key, value in metrics.items() if key != "trained_problems"}
        out["trained"].append(kind)
        out["kept"][kind] = k
        if settings.gate and kind in in_use:
            j = in_use[kind]
            gate = gate_retrained(
                kind,
                rows,
                config,
                (model, tokenizer),
                loop.critic_dir(j, kind),
                label_rows(kind, [t for i in range(1, j + 1) for t in by_round[i]], settings.min_samples),
                replace(config, seed=loop.seed(j, "critics")),
                tolerance=settings.gate_tolerance,
                dtype=dtype,
            )
            out[kind]["gate"] = {"previous_round": j, **gate}
            out["kept"][kind] = k if gate["accepted"] else j
            verdict = "the retrained one is used" if gate["accepted"] else f"round {j}'s stays"
            loop.ui.message(
                f"round {k} {kind} critic gate: {verdict} ({gate['measure']}, {gate['rows']} rows)"
            )
    if settings.gate_search and in_use and out["trained"]:
        _search_gate(loop, k, out, in_use)
    return out


def _search_gate(loop: Loop, k: int, out: dict[str, Any], in_use: dict[str, int]) -> None:
    """``critics.gate_search``: the held-out gate's pick, the set in use and all retrained critics, each
    guiding the learned-critics search on dev problems; ``out["kept"]`` becomes the winner. A critic that
    ranks held-out labels better can still guide search worse (game24-small's round-2 ORM:
    benchmarks/README.md)."""
    sets = {
        "gate": out["kept"],
        "in use": in_use,
        "retrained": {**in_use, **dict.fromkeys(out["trained"], k)},
    }
    record = critic_search_gate(
        loop.task,
        loop.split_problems("dev")[: loop.config.critics.gate_search],
        policy=loop.policy(k - 1),  # the policy that made the trees, and the critics' starting point
        candidates={
            n: {kind: str(loop.critic_dir(j, kind)) for kind, j in s.items()} for n, s in sets.items()
        },
        default="gate",
        settings=loop.config.evaluate,
        seed=loop.seed(k, "critics"),
        ui=loop.ui,
        label=f"round {k}",
    )
    out["search_gate"], out["kept"] = record, dict(sets[record["kept"]])
    accuracy = ", ".join(f"{name} {a:.2f}" for name, a in record["accuracy"].items())
    loop.ui.message(f"round {k} critic search gate: {record['kept']} kept ({accuracy})")
