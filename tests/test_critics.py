from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from alphallm.critics.base import CriticInput
from alphallm.critics.combine import combine, make_evaluate_fn
from alphallm.critics.implicit_q import ImplicitQCritic, split_last_option
from alphallm.critics.learned import (
    CriticModel,
    LearnedCritic,
    confidence_features,
    load_critics,
)
from alphallm.critics.metrics import auc, auc_within, expected_calibration_error, spearman, spearman_ceiling
from alphallm.critics.tool import ToolCritic
from alphallm.lm.hf import encode_batch
from alphallm.lm.loading import load_causal_lm
from alphallm.search.types import EvalRequest, Option
from alphallm.solve import SolveConfig
from alphallm.tasks import get_task
from alphallm.train.critic import CriticTrainConfig, cap_by_group, train_critic
from alphallm.train.critic_data import _loss, predict
from alphallm.train.critic_gate import critic_gate
from alphallm.train.labels import LabelRow


def test_metrics() -> None:
    assert auc([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0]) == 1.0
    assert auc([0.1, 0.8, 0.3, 0.9], [1, 1, 0, 0]) == 0.25  # one of four pairs ordered right
    assert auc([0.5, 0.5], [1, 0]) == 0.5
    assert math.isnan(auc([0.2, 0.3], [1, 1]))
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert expected_calibration_error([0.25, 0.25, 0.75, 0.75], [0, 0.5, 1, 0.5]) == pytest.approx(0.0)
    assert spearman_ceiling([0.1, 0.5, 0.9]) == pytest.approx(1.0)  # no ties: a scorer can be perfect
    assert math.isnan(spearman_ceiling([0.0, 0.0]))
    # Mostly-zero targets: every tie-free scorer that orders the groups right reaches the ceiling, none more.
    targets = [0.0] * 8 + [0.5, 1.0]
    rng = random.Random(0)
    best = []
    for _ in range(50):
        scores = [t + rng.random() * 0.1 for t in targets]  # right group order, random inside the zeros
        best.append(spearman(scores, targets))
        assert spearman([rng.random() for _ in targets], targets) <= spearman_ceiling(targets) + 1e-12
    assert best == pytest.approx([spearman_ceiling(targets)] * 50)
    assert spearman_ceiling(targets) == pytest.approx(0.7006, abs=1e-4)  # far from 1: ties cost 0.3


def test_auc_within_problems_counts_only_pairs_of_one_problems_solutions() -> None:
    # A critic that only knows which problem is easy: the right solutions of the easy problem "a"
    # outrank the wrong ones of the hard "b" (pooled AUC 2/3), but within each problem it is at chance.
    scores = [0.9, 0.9, 0.9, 0.2, 0.2, 0.2]
    labels, groups = [1, 1, 0, 1, 0, 0], ["a"] * 3 + ["b"] * 3
    assert auc(scores, labels) == pytest.approx(2 / 3) and auc_within(scores, labels, groups) == 0.5
    # Pairs weight the problems: "a" has 2 x 1 pairs, both right; "b" 1 x 1, wrong.
    assert auc_within([0.8, 0.7, 0.1, 0.2, 0.9], [1, 1, 0, 1, 0], ["a", "a", "a", "b", "b"]) == pytest.approx(
        2 / 3
    )
    assert math.isnan(auc_within([0.3, 0.4], [1, 0], ["a", "b"]))  # no problem holds both


def test_combine_is_a_weighted_mean_of_available_scores() -> None:
    assert combine({"tool": 1.0, "rollout": 0.0}, {"tool": 1.0, "rollout": 3.0}) == pytest.approx(0.25)
    assert combine({"tool": None, "rollout": 0.5}, {"tool": 1.0, "rollout": 1.0}) == 0.5
    assert combine({"value": 0.9}, {"tool": 1.0}) == 0.5  # no weighted critic could judge: neutral


class _DigitCritic:
    """Scores a step by the last digit of its solution text over 10 (None for the bare root)."""

    name = "prm"

    def score(self, items: list[CriticInput]) -> list[float | None]:
        return [int(item.solution.strip()[-1]) / 10 if item.solution else None for item in items]


def test_a_learned_critic_prunes_the_steps_it_scores_at_or_below_its_threshold() -> None:
    task = get_task("arith")
    problem = task.problems("dev")[0]
    prompt = task.format_prompt(problem)
    requests = [EvalRequest(0, i, prompt, Option(f"step {i}\n"), 1) for i in (2, 3, 6)]
    requests.append(EvalRequest(0, 0, prompt, Option(""), 0))  # the root: the PRM cannot judge it

    def pruned(**kwargs: Any) -> list[bool]:
        evaluate = make_evaluate_fn(task, [problem], critics=[_DigitCritic()], weights={"prm": 1.0}, **kwargs)
        return [e.prune for e in evaluate(requests)]

    assert pruned(prune_with="prm", prune_below=0.3) == [True, True, False, False]
    assert pruned(prune_with="prm", prune_below=0.0) == [False, False, False, False]
    assert pruned(prune_with=None, prune_below=0.9) == [False, False, False, False]
    with pytest.raises(ValueError, match="prune_with"):
        SolveConfig(prune_with="gold")
    with pytest.raises(ValueError, match="prune_below"):
        SolveConfig(prune_below=1.0)
    with pytest.raises(ValueError, match="needs that critic"):  # no PRM given: never a silent no-op
        SolveConfig(prune_with="prm", weights={"prm": 1.0})
    with pytest.raises(ValueError, match="needs that critic"):
        SolveConfig(prune_with="prm", weights={"tool": 1.0}, critic_dirs={"prm": "runs/prm"})


def test_tool_critic_judges_every_step() -> None:
    task = get_task("arith")
    problem = task.problem_from_row({"problem": "2+3*4"}, default_id="p")
    critic = ToolCritic(task)
    items = [
        CriticInput(problem, "3*4=12 -> 2+12\n", False),
        CriticInput(problem, "3*4=12 -> 2+12\n2+12=15 -> 15\n", False),
        CriticInput(problem, "3*4=12 -> 2+12\n2+12=14 -> 14\nAnswer: 14\n", True),
        CriticInput(problem, "", False),
    ]
    assert critic.score(items) == [1.0, 0.0, 1.0, None]


def test_game24_tool_critic_rejects_legal_moves_into_dead_states() -> None:
    task = get_task("game24")
    problem = task.problem_from_row({"numbers": [4, 9, 10, 13]}, default_id="p")
    live = "13-9=4 (left: 4 4 10)\n"  # (10-4)*4 = 24
    dead = "13+10=23 (left: 4 9 23)\n"  # legal, but 4, 9 and 23 cannot make 24
    items = [CriticInput(problem, live, False), CriticInput(problem, dead, False)]
    assert ToolCritic(task).score(items) == [1.0, 0.0]
    assert ToolCritic(task, reachability=False).score(items) == [1.0, 1.0]  # legality alone
    # A finished solution is judged by its answer line, not by the state before it.
    answered = live + "10-4=6 (left: 4 6)\n4*6=24 (left: 24)\nAnswer: (13-9)*(10-4)=24\n"
    assert ToolCritic(task).score([CriticInput(problem, answered, True)]) == [1.0]
    # A solution that ended without an answer is none, however legal its moves (a retrying policy's
    # rollout cut at the token limit, say).
    cut = live + "10+4=14 (left: 4 14)\nback\n" + live
    assert ToolCritic(task).score([CriticInput(problem, cut, True), CriticInput(problem, cut, False)]) == [
        0.0,
        1.0,
    ]


def test_the_critic_gate_compares_the_bars_measure_and_keeps_the_new_critic_when_in_doubt() -> None:
    rows = [LabelRow("Q\n", f"{i}\n", float(i % 2), group=f"g{i // 4}") for i in range(40)]
    truth = [r.target for r in rows]
    noisy = [t if i % 5 else 1 - t for i, t in enumerate(truth)]  # every fifth label flipped: AUC 0.8

    def scores(values: list[float]) -> Any:
        return lambda batch: [values[rows.index(r)] for r in batch]

    worse = critic_gate("orm", rows, scores(noisy), scores(truth))
    assert (worse["new"], worse["previous"], worse["accepted"]) == (pytest.approx(0.8), 1.0, False)
    assert worse["measure"] == "auc" and worse["rows"] == 40 and worse["problems"] == 10
    assert critic_gate("orm", rows, scores(noisy), scores(truth), tolerance=0.25)["accepted"]
    # One label of 40 flipped: AUC 0.975 against 1.0 is within twice the bootstrap standard error over the
    # 10 problems, so the gate does not decide on it and the new critic is kept.
    slip = [1 - t if i == 3 else t for i, t in enumerate(truth)]
    close = critic_gate("orm", rows, scores(slip), scores(truth))
    assert close["new"] == pytest.approx(0.975) and 0.0125 < close["se"] < 0.1 and close["accepted"]
    assert 0.0 < worse["se"] < 0.1  # 0.2 apart is beyond twice it
    assert critic_gate("prm", rows, scores(truth), scores(noisy))["accepted"]
    # Value critics are compared by rank correlation, which a monotone rescaling does not change.
    value = critic_gate("value", rows, scores([t / 2 for t in truth]), scores(truth))
    assert value["measure"] == "spearman" and value["accepted"] and value["new"] == pytest.approx(1.0)
    # Too few rows, or one class only: nothing to tell them apart by, so the new one (more data) is kept.
    few = critic_gate("orm", rows[:10], scores(noisy), scores(truth))
    assert few["accepted"] and "new" not in few and few["reason"] == "fewer than 30 rows"
    same = [LabelRow("Q\n", f"{i}\n", 1.0, group="g") for i in range(40)]
    one_class = critic_gate("orm", same, lambda b: [0.5] * len(b), lambda b: [0.9] * len(b))
    assert one_class["accepted"] and one_class["reason"] == "auc undefined on these rows"


def _synthetic_rows(n: int, seed: int) -> list[LabelRow]:
    """A learnable label: is the last digit of the solution even?"""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        digit = rng.randint(0, 9)
        rows.append(
            LabelRow("Q: x\n", f"{rng.randint(10, 99)}{digit}\n", float(digit % 2 == 0), group=f"g{i}")
        )
    return rows


def test_a_critic_learns_a_synthetic_label_and_round_trips(tiny_model_dir: Path, tmp_path: Path) -> None:
    base, tokenizer = load_causal_lm(str(tiny_model_dir))
    rows = _synthetic_rows(400, 0)
    config = CriticTrainConfig(epochs=6, lr=3e-3, batch_size=32, holdout=0.25, seed=0)
    model, metrics = train_critic(rows, base=base, tokenizer=tokenizer, kind="value", config=config)
    assert metrics["held_out"]["auc"] > 0.8  # chance is 0.5
    model.save(tmp_path / "critic", tokenizer, {"base": "tiny"})
    loaded, tokenizer2, meta = CriticModel.load(tmp_path / "critic")
    assert meta["kind"] == "value"
    fresh = _synthetic_rows(20, 1)
    assert predict(loaded, tokenizer2, fresh) == pytest.approx(predict(model, tokenizer, fresh), abs=1e-6)
    critic = LearnedCritic(loaded, tokenizer2, task_format=lambda p: "Q: x\n")
    problem = get_task("arith").problem_from_row({"problem": "1+1"}, default_id="p")
    scores = critic.score([CriticInput(problem, "124\n", False), CriticInput(problem, "125\n", False)])
    assert scores[0] is not None and scores[1] is not None and scores[0] > scores[1]
    assert critic.usage.prefill_tokens > 0


@pytest.mark.parametrize(
    ("max_rows", "max_held_out_rows", "epochs", "steps", "held"),
    [(50, 40, 2, 8, 40), (None, None, 1, 19, 100)],
)
def test_training_steps_counts_the_steps_train_critic_takes(
    tiny_model_dir: Path,
    max_rows: int | None,
    max_held_out_rows: int | None,
    epochs: int,
    steps: int,
    held: int,
) -> None:
    # 400 rows, a quarter of the problems held out: 300 train rows, or 50 under the cap; batches of 16.
    # (The progress bars counted all 400 rows, and the loop's game24 critic bars stopped at 158 of 7,374.)
    # The held-out cap leaves training alone and scores 40 of the 100 held-out rows.
    from alphallm.train.critic import training_steps

    base, tokenizer = load_causal_lm(str(tiny_model_dir))
    rows = _synthetic_rows(400, 0)
    config = CriticTrainConfig(
        epochs=epochs,
        batch_size=16,
        holdout=0.25,
        max_rows=max_rows,
        max_held_out_rows=max_held_out_rows,
        seed=0,
    )
    taken: list[int] = []
    _, metrics = train_critic(
        rows, base=base, tokenizer=tokenizer, kind="orm", config=config, on_step=lambda s, _: taken.append(s)
    )
    assert training_steps(rows, config, "orm") == len(taken) == steps
    assert metrics["held_out_rows"] == metrics["held_out"]["rows"] == held


def test_held_out_rows_are_capped_by_whole_problems() -> None:
    # 40 problems of 10 rows each: a cap of 95 keeps 9 whole problems, the same ones for the same seed.
    rows = [LabelRow("Q\n", f"{i}\n", float(i % 2), group=f"g{i // 10}") for i in range(400)]
    capped = cap_by_group(rows, 95, seed=0)
    groups = {r.group for r in capped}
    assert len(capped) == 90 and len(groups) == 9
    assert all(sum(r.group == g for r in capped) == 10 for g in groups)
    assert capped == cap_by_group(rows, 95, seed=0) and groups != {r.group for r in cap_by_group(rows, 95, 1)}
    assert cap_by_group(rows, None, 0) == rows == cap_by_group(rows, 400, 0)
    assert len(cap_by_group(rows, 3, 0)) == 10  # one problem larger than the cap still gives one problem
    with pytest.raises(ValueError, match="max_held_out_rows"):
        CriticTrainConfig(max_held_out_rows=0)


def test_soft_targets_stay_soft(tiny_model_dir: Path) -> None:
    base, tokenizer = load_causal_lm(str(tiny_model_dir))
    model = CriticModel(base, "prm")
    rows = [LabelRow("Q\n", "a\n", 0.875), LabelRow("Q\n", "b\n", 0.125, weight=3.0)]
    loss = _loss(model, tokenizer, rows, torch.device("cpu"))
    with torch.no_grad():
        probs = torch.tensor(predict(model, tokenizer, rows))
    expected = (
        -(
            1 * (0.875 * probs[0].log() + 0.125 * (1 - probs[0]).log())
            + 3 * (0.125 * probs[1].log() + 0.875 * (1 - probs[1]).log())
        )
        / 4
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_orm_judges_only_complete_solutions(tiny_model_dir: Path) -> None:
    base, tokenizer = load_causal_lm(str(tiny_model_dir))
    critic = LearnedCritic(CriticModel(base, "orm").eval(), tokenizer, task_format=lambda p: "Q\n")
    problem = get_task("arith").problem_from_row({"problem": "1+1"}, default_id="p")
    scores = critic.score(
        [CriticInput(problem, "1+1=2 -> 2\n", False), CriticInput(problem, "Answer: 2\n", True)]
    )
    assert scores[0] is None and scores[1] is not None


def test_implicit_q_is_zero_against_itself_and_antisymmetric(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import LlamaForCausalLM

    from alphallm.lm.hf import TransformersLM

    task = get_task("arith")
    base, tokenizer = load_causal_lm(str(tiny_model_dir))
    torch.manual_seed(1)
    other = LlamaForCausalLM(base.config)
    a, b = TransformersLM(base, tokenizer), TransformersLM(other, tokenizer)
    problem = task.problem_from_row({"problem": "2+3*4"}, default_id="p")
    items = [CriticInput(problem, "3*4=12 -> 2+12\n", False), CriticInput(problem, "3*4=13 -> 2+13\n", False)]
    same = ImplicitQCritic(task, a, a, beta=0.1)
    assert same.rho(items) == pytest.approx([0.0, 0.0], abs=1e-6)
    assert same.score(items) == pytest.approx([0.5, 0.5])
    forward = ImplicitQCritic(task, a, b, beta=0.1).rho(items)
    backward = ImplicitQCritic(task, b, a, beta=0.1).rho(items)
    assert forward == pytest.approx([-x for x in backward], abs=1e-5)  # type: ignore[operator]
    scores = ImplicitQCritic(task, a, b, beta=0.1).score(items)
    assert (scores[0] > 0.5) == (forward[0] > forward[1])  # type: ignore[operator]
    assert split_last_option("x\ny\n") == ("x\n", "y\n")


def test_confidence_features_read_only_the_marked_tokens() -> None:
    logp = torch.tensor([[-9.0, -0.5, -2.0, -0.1], [-9.0, -9.0, -9.0, -9.0]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 0]])
    features = confidence_features(logp, mask)
    # min -2 (the prompt's -9 is ignored), mean -2.6/3, sum -2.6, one token below -1.
    assert features[0].tolist() == pytest.approx([-2.0 / 5, -2.6 / 3, -2.6 / 20, 1 / 4])
    assert features[1].tolist() == [0.0, 0.0, 0.0, 0.0]  # nothing marked: the root's empty solution


def _slip_rows(n: int, seed: int) -> tuple[list[LabelRow], list[Any]]:
    """arith solutions from a noisy teacher, labelled by the checker: a wrong answer always comes
    from a slipped calculation, a token the shipped base model finds unlikely."""
    task = get_task("arith")
    rng = random.Random(seed)
    problems = task.generate(rng, n)
    rows = []
    for i, problem in enumerate(problems):
        solution = task.teacher_solution(problem, rng, noise=0.25)
        rows.append(
            LabelRow(
                task.format_prompt(problem),
                solution,
                float(bool(task.check(problem, solution))),
                group=f"g{i}",
            )
        )
    return rows, problems


def test_a_confidence_critic_sees_the_policys_slips_with_its_backbone_frozen(tmp_path: Path) -> None:
    from alphallm.lm.loading import resolve_model_path

    base, tokenizer = load_causal_lm(resolve_model_path("arith-base"))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    rows, _ = _slip_rows(240, 0)
    assert 0.2 < sum(r.target for r in rows) / len(rows) < 0.8
    config = CriticTrainConfig(epochs=6, lr=3e-3, batch_size=32, holdout=0.25, seed=0, confidence=True)
    model, metrics = train_critic(rows, base=base, tokenizer=tokenizer, kind="orm", config=config)
    assert metrics["held_out"]["auc"] > 0.85  # 0.68 without the features (full fine-tuning)
    assert metrics["trainable_parameters"] == sum(p.numel() for p in model.head.parameters())
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # the backbone is untouched
    model.save(tmp_path / "critic", tokenizer, {"base": "arith-base"})
    loaded, tokenizer2, meta = CriticModel.load(tmp_path / "critic")
    assert meta["confidence"] is True and loaded.confidence
    fresh, _ = _slip_rows(16, 1)
    assert predict(loaded, tokenizer2, fresh) == pytest.approx(predict(model, tokenizer, fresh), abs=1e-6)


def test_a_token_evidence_critic_scores_every_solution_token_and_round_trips(tmp_path: Path) -> None:
    from alphallm.lm.loading import resolve_model_path

    base, tokenizer = load_causal_lm(resolve_model_path("arith-base"))
    rows, _ = _slip_rows(240, 0)
    config = CriticTrainConfig(
        epochs=6, lr=3e-3, batch_size=32, holdout=0.25, seed=0, confidence=True, token_evidence=True
    )
    model, metrics = train_critic(rows, base=base, tokenizer=tokenizer, kind="orm", config=config)
    # 60 held-out rows: the plain confidence critic scores 0.76-0.86 across seeds here, this one 0.77-0.82.
    assert metrics["held_out"]["auc"] > 0.75
    assert model.evidence is not None and model.frozen
    heads = [*model.head.parameters(), *model.evidence.parameters()]
    assert metrics["trainable_parameters"] == sum(p.numel() for p in heads)
    # One row for the whole text, then one per solution token (the prompt's tokens are not read).
    prompt, solution = rows[0].prompt, rows[0].solution
    batch = encode_batch(tokenizer, [prompt, prompt], [solution, ""], torch.device("cpu"), model.max_length)
    with torch.no_grad():
        features = model.features(**batch)
        logits = model.logits(features)
        global_only = model.head(torch.stack([f[0] for f in features])).squeeze(-1)
    n_solution = len(tokenizer(prompt + solution)["input_ids"]) - len(tokenizer(prompt)["input_ids"])
    assert [len(f) for f in features] == [1 + n_solution, 1]
    assert logits[0] < global_only[0]  # the tokens' evidence only ever lowers the score
    assert logits[1] == pytest.approx(global_only[1].item(), abs=1e-6)  # nothing to read: nothing taken off
    model.save(tmp_path / "critic", tokenizer, {"base": "arith-base"})
    loaded, tokenizer2, meta = CriticModel.load(tmp_path / "critic")
    assert meta["token_evidence"] is True and loaded.token_evidence
    fresh, _ = _slip_rows(16, 1)
    assert predict(loaded, tokenizer2, fresh) == pytest.approx(predict(model, tokenizer, fresh), abs=1e-6)
    task = get_task("arith")
    critic = LearnedCritic(loaded, tokenizer2, task_format=task.format_prompt)
    texts = critic.score_texts([r.prompt for r in fresh], [r.solution for r in fresh])
    assert texts == pytest.approx(predict(model, tokenizer, fresh), abs=1e-6)
    with pytest.raises(ValueError, match="needs confidence"):
        CriticTrainConfig(token_evidence=True)


def test_a_lora_confidence_critic_reads_the_base_without_its_adapters(tiny_model_dir: Path) -> None:
    base, tokenizer = load_causal_lm(str(tiny_model_dir))
    reference, _ = load_causal_lm(str(tiny_model_dir))
    rows = _synthetic_rows(64, 0)
    config = CriticTrainConfig(epochs=2, lr=1e-2, batch_size=16, holdout=0.0, lora_r=4, confidence=True)
    model, _ = train_critic(rows, base=base, tokenizer=tokenizer, kind="value", config=config)
    batch = encode_batch(tokenizer, ["Q: x\n"], ["123\n"], torch.device("cpu"), model.max_length)
    positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        adapted = model.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        plain = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert not torch.allclose(adapted, plain, atol=1e-4)  # the adapters did train
    expected = torch.log_softmax(plain[:, :-1], -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    got = model._token_logprobs(batch["input_ids"], batch["attention_mask"], positions, None)  # type: ignore[arg-type]
    assert got == pytest.approx(expected, abs=1e-5)


# Families whose forward changes the output embedding's logits: (config, model, that change). Random
# weights at initializer_range 0.2 give logits of a few units, so a softcap of 0.5 bites.
def test_critics_on_one_frozen_backbone_share_it_and_read_each_text_once(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    task = get_task("arith")
    torch.manual_seed(0)
    for kind in ("value", "prm", "orm"):  # frozen-backbone critics of one policy: identical backbones
        base, tokenizer = load_causal_lm(str(tiny_model_dir))
        CriticModel(base, kind, confidence=True).save(tmp_path / kind, tokenizer, {"base": "tiny"})
    base, tokenizer = load_causal_lm(str(tiny_model_dir))
    with torch.no_grad():
        base.lm_head.weight.mul_(1.5)  # a fine-tuned backbone: other weights
    CriticModel(base, "value").save(tmp_path / "tuned", tokenizer, {"base": "tiny"})
    dirs = {name: str(tmp_path / name) for name in ("value", "prm", "orm", "tuned")}
    critics = load_critics(dirs, task=task)
    assert critics["value"].model.backbone is critics["prm"].model.backbone is critics["orm"].model.backbone
    assert critics["tuned"].model.backbone is not critics["value"].model.backbone
    assert critics["value"].cache is critics["prm"].cache is critics["orm"].cache
    assert critics["tuned"].cache is not critics["value"].cache

    problem = task.problem_from_row({"problem": "2+3*4"}, default_id="p")
    items = [
        CriticInput(problem, "3*4=12 -> 2+12\n", False),
        CriticInput(problem, "3*4=12 -> 2+12\n2+12=14 -> 14\nAnswer: 14\n", True),
    ]
    scores = {name: critic.score(items) for name, critic in critics.items()}
    alone = {name: LearnedCritic.load(d, task=task).score(items) for name, d in dirs.items()}
    for name in dirs:  # sharing changes no score
        assert [x is None for x in scores[name]] == [x is None for x in alone[name]]
        assert [x for x in scores[name] if x is not None] == pytest.approx(
            [x for x in alone[name] if x is not None], abs=1e-5
        )
    assert len({scores[name][1] for name in ("value", "prm", "orm")}) == 3  # the heads still differ
    # value read both texts; the PRM and the ORM found them in the cache; the tuned critic read its own.
    assert critics["value"].usage.prefill_tokens > 0 and critics["tuned"].usage.prefill_tokens > 0
    assert critics["prm"].usage.prefill_tokens == critics["orm"].usage.prefill_tokens == 0
