"""The policy gate: the best candidate of a round by dev score (SFT + DPO must beat SFT alone beyond
noise), older gate records read with their meaning, the sampled score's shared draws, and the search
guard (``evaluate.gate_search``) with real searches."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from test_loop import TINY


def _scores(dev: float | list[int]) -> tuple[float, dict[str, float]]:
    """A policy's dev score and each problem's: a float is every one of 10 problems alike (a gain over
    another such policy is beyond any noise), a list gives each problem's 1/0."""
    by_problem = [dev] * 10 if isinstance(dev, float) else dev
    score = dev if isinstance(dev, float) else sum(dev) / len(dev)
    return score, {f"p{i}": float(v) for i, v in enumerate(by_problem)}


def _trained(round_dir: Path, *, dpo_ran: bool) -> None:
    """The records of a round whose SFT had rows (and whose DPO ran, or was skipped): it has candidates."""
    round_dir.mkdir(parents=True, exist_ok=True)
    (round_dir / "data.json").write_text(json.dumps({"sft": [["Q: 1+1\n", "Answer: 2\n"]], "pairs": []}))
    (round_dir / "dpo.json").write_text(json.dumps({} if dpo_ran else {"skipped": True}))


def _gate_loop(tmp_path: Path, dev: dict[str, Any], *, dpo_ran: bool = True) -> Any:
    """A Loop whose round-1 dev scores are given per policy directory name (see ``_scores``)."""
    from alphallm.loop import Loop
    from alphallm.loop_config import LoopConfig, build

    loop = Loop(build(LoopConfig, {**TINY, "out_dir": str(tmp_path)}))
    _trained(loop.round_dir(1), dpo_ran=dpo_ran)
    loop.dev_scores = lambda policy: _scores(dev[Path(policy).name])  # type: ignore[method-assign]
    return loop


@pytest.mark.parametrize(
    ("dev", "dpo_ran", "kept", "policy"),
    [
        ({"arith-base": 0.5, "policy": 0.4, "sft": 0.6}, True, "sft", "round-1/sft"),  # DPO hurt
        ({"arith-base": 0.5, "policy": 0.7, "sft": 0.6}, True, "policy", "round-1/policy"),
        ({"arith-base": 0.5, "policy": 0.6, "sft": 0.6}, True, "sft", "round-1/sft"),  # tie: DPO must earn it
        # DPO solves one dev problem more (z 1): a lead within noise keeps SFT alone
        (
            {"arith-base": 0.5, "policy": [1] * 7 + [0] * 3, "sft": [1] * 6 + [0] * 4},
            True,
            "sft",
            "round-1/sft",
        ),
        ({"arith-base": 0.5, "policy": 0.3, "sft": 0.4}, True, "sft", "arith-base"),  # both worse: rejected
        ({"arith-base": 0.5, "policy": 0.6}, False, "policy", "round-1/policy"),  # no DPO: one candidate
    ],
)
def test_gate_keeps_the_best_candidate_of_the_round(
    tmp_path: Path, dev: dict[str, Any], dpo_ran: bool, kept: str, policy: str
) -> None:
    loop = _gate_loop(tmp_path, dev, dpo_ran=dpo_ran)
    gate = loop._stage_gate(1)  # type: ignore[attr-defined]
    assert gate["kept"] == kept
    assert set(gate["candidates"]) == ({"policy", "sft"} if dpo_ran else {"policy"})
    assert gate["dev_accuracy"] == _scores(dev[kept])[0]
    if dpo_ran:  # the paired comparison that decided between them is on record
        change = gate["dpo_over_sft"]
        assert change["change"] == pytest.approx(_scores(dev["policy"])[0] - _scores(dev["sft"])[0])
        assert change["problems"] == 10
    else:
        assert "dpo_over_sft" not in gate
    (loop.round_dir(1) / "gate.json").write_text(json.dumps(gate))  # type: ignore[attr-defined]
    assert loop.policy(1).endswith(policy)  # type: ignore[attr-defined]
    # Round 2 compares against the score round 1's gate recorded; it does not score that policy again.
    _trained(loop.round_dir(2), dpo_ran=False)  # type: ignore[attr-defined]
    scored: list[str] = []
    loop.dev_scores = lambda p: scored.append(Path(p).name) or _scores(0.55)  # type: ignore[attr-defined]
    gate2 = loop._stage_gate(2)  # type: ignore[attr-defined]
    assert scored == ["policy"]
    assert gate2["previous_dev_accuracy"] == _scores(dev[Path(policy).name])[0]
    # Resumed with another dev set size, the recorded score no longer applies: score it again.
    config = loop.config  # type: ignore[attr-defined]
    loop.config = replace(config, evaluate=replace(config.evaluate, dev_problems=11))  # type: ignore[attr-defined]
    scored.clear()
    loop._stage_gate(2)  # type: ignore[attr-defined]
    assert scored == [Path(policy).name, "policy"]
    # So with another gate score: round 1 recorded a greedy one.
    assert gate["metric"] == "greedy"
    loop.config = replace(config, evaluate=replace(config.evaluate, gate_metric="sampled"))  # type: ignore[attr-defined]
    scored.clear()
    assert loop._stage_gate(2)["metric"] == "sampled (n=16, T=0.7)"  # type: ignore[attr-defined]
    assert scored == [Path(policy).name, "policy"]


def test_gate_records_from_older_runs_read_with_their_meaning(tmp_path: Path) -> None:
    """Before SFT alone was a candidate a gate record had no ``kept`` (SFT + DPO was the one), and
    before the sampled score no ``metric`` (greedy): a resumed old run must read them so."""
    loop = _gate_loop(tmp_path, {"arith-base": 0.5, "policy": 0.7})  # scored again, it would read 0.7
    old = {"accepted": True, "dev_accuracy": 0.6, "previous_dev_accuracy": 0.5, "dev_problems": 10}
    (loop.round_dir(1) / "gate.json").write_text(json.dumps(old))  # type: ignore[attr-defined]
    assert loop.policy(1).endswith("round-1/policy")  # type: ignore[attr-defined]
    assert loop.gate(1)["metric"] == "greedy"  # type: ignore[attr-defined]
    assert loop.kept_dev_accuracy(1) == 0.6  # type: ignore[attr-defined]  # recorded, not scored again


def test_the_sampled_gate_scores_every_policy_on_the_same_draws(tmp_path: Path) -> None:
    from alphallm.errors import UserError
    from alphallm.loop import Loop
    from alphallm.loop_config import LoopConfig, build

    evaluate = {**TINY["evaluate"], "gate_metric": "sampled", "gate_samples": 3, "gate_temperature": 1.0}
    loop = Loop(build(LoopConfig, {**TINY, "out_dir": str(tmp_path), "evaluate": evaluate}))
    scores = [loop.dev_accuracy("arith-base") for _ in range(2)]
    greedy = Loop(build(LoopConfig, {**TINY, "out_dir": str(tmp_path)})).dev_accuracy("arith-base")
    # 3 samples of each of 10 problems: a multiple of 1/30, the same draws every time it is asked.
    assert scores[0] == scores[1] and round(scores[0] * 30, 6).is_integer()
    assert 0.0 < scores[0] < 1.0 and 0.0 < greedy < 1.0
    # Each problem's share of its 3 samples, from the same draws: the candidates are compared on them.
    score, by_problem = loop.dev_scores("arith-base")
    assert score == scores[0] and len(by_problem) == 10
    assert all(round(v * 3, 6).is_integer() for v in by_problem.values())
    assert sum(by_problem.values()) / 10 == pytest.approx(score)
    with pytest.raises(UserError, match=r"evaluate: gate_metric must be one of greedy, sampled, not 'best'"):
        build(LoopConfig, {**TINY, "evaluate": {**evaluate, "gate_metric": "best"}})
    with pytest.raises(UserError, match=r"gate_samples must be at least 1"):
        build(LoopConfig, {**TINY, "evaluate": {**evaluate, "gate_samples": 0}})


def test_the_search_guard_keeps_only_a_candidate_whose_dev_search_holds_up(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``evaluate.gate_search`` the candidate with the best dev score must also search the dev
    problems no worse than the best policy kept so far. Here SFT + DPO scores best on dev but is a
    random model whose search solves nothing, so the guard keeps SFT alone (the base model again)."""
    import shutil

    import alphallm.loop_gate
    from alphallm.lm.loading import SHIPPED_MODELS_DIR
    from alphallm.loop import Loop
    from alphallm.loop_config import LoopConfig, build

    evaluate = {**TINY["evaluate"], "gate_search": 8}
    loop = Loop(build(LoopConfig, {**TINY, "out_dir": str(tmp_path), "evaluate": evaluate}))
    for k in (0, 1):
        loop.round_dir(k).mkdir(parents=True)
    _trained(loop.round_dir(1), dpo_ran=True)
    shutil.copytree(tiny_model_dir, loop.round_dir(1) / "policy")
    shutil.copytree(SHIPPED_MODELS_DIR / "arith-base", loop.round_dir(1) / "sft")
    dev = {"arith-base": 0.5, "policy": 0.7, "sft": 0.6}
    loop.dev_scores = lambda policy: _scores(dev[Path(policy).name])  # type: ignore[method-assign]
    searched: list[str] = []
    solve_with = alphallm.loop_gate.solve_with
    monkeypatch.setattr(
        alphallm.loop_gate,
        "solve_with",
        lambda *a, **kw: searched.append(kw["policy"]) or solve_with(*a, **kw),
    )

    gate = loop._stage_gate(1)
    guard = gate["search_guard"]["candidates"]
    assert guard["policy"]["accuracy"] == 0.0 and not guard["policy"]["passed"]
    assert guard["sft"]["passed"] and guard["sft"]["change"] == 0.0 and guard["sft"]["se"] == 0.0
    base = guard["sft"]["reference"]
    assert base["round"] == 0 and base["accuracy"] == guard["sft"]["accuracy"] > 0.0
    assert gate["accepted"] and gate["kept"] == "sft" and gate["dev_accuracy"] == 0.6
    assert sorted(Path(p).name for p in searched) == ["arith-base", "policy", "sft"]
    (loop.round_dir(1) / "gate.json").write_text(json.dumps(gate))

    # The searches are kept: a resumed gate reuses them, and so does the next round, whose best kept
    # policy (a tie of the base and round 1's SFT) is the later one.
    searched.clear()
    assert loop._stage_gate(1) == gate and searched == []
    _trained(loop.round_dir(2), dpo_ran=False)
    shutil.copytree(tiny_model_dir, loop.round_dir(2) / "policy")
    dev["policy"] = 0.8
    gate2 = loop._stage_gate(2)
    assert searched == [str(loop.round_dir(2) / "policy")]
    assert gate2["search_guard"]["candidates"]["policy"]["reference"]["round"] == 1
    (loop.round_dir(2) / "gate.json").write_text(json.dumps(gate2))
    assert not gate2["accepted"] and loop.policy(2) == str(loop.round_dir(1) / "sft")

    # Without the guard the random model would have been kept.
    plain = Loop(build(LoopConfig, {**TINY, "out_dir": str(tmp_path)}))
    plain.dev_scores = loop.dev_scores  # type: ignore[method-assign]
    assert plain._stage_gate(2)["accepted"] and "search_guard" not in plain._stage_gate(2)


def test_the_report_says_which_test_a_rejected_round_failed() -> None:
    from alphallm.report.run_report import _table

    cell = {"accuracy": 0.4, "tokens_per_problem": 900.0}
    rejected = [{"round": 0, "greedy": cell}, {"round": 1, "accepted": False, "greedy": cell}]
    assert "<td>no</td>" in _table(rejected)  # no gate record at hand
    dev = {"dev_accuracy": 0.14, "previous_dev_accuracy": 0.19}
    assert "<td>no: dev 0.14 &lt; 0.19</td>" in _table(rejected, {1: dev})
    guard = {"sft": {"accuracy": 0.62, "reference": {"accuracy": 0.8}}, "policy": {"accuracy": 0.48}}
    searched = _table(rejected, {1: {**dev, "search_guard": {"candidates": guard}}})
    assert "<td>no: dev search 0.62 &lt; 0.80</td>" in searched
    kept = [rejected[0], {**rejected[1], "accepted": True}]
    assert "<td>yes</td>" in _table(kept, {1: dev}) and "<td>base</td>" in _table(kept)
    # When DPO ran: which candidate, and how SFT + DPO compared with SFT alone on dev.
    dpo = {"change": 0.006, "se": 0.013}
    both = {**dev, "kept": "sft", "candidates": {"policy": 0.22, "sft": 0.214}, "dpo_over_sft": dpo}
    assert "<td>yes: SFT <small>(DPO − SFT +0.006 ± 0.013)</small></td>" in _table(kept, {1: both})
    assert "<td>yes: SFT + DPO <small>" in _table(kept, {1: {**both, "kept": "policy"}})
