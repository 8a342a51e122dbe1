"""Real-model features on a tiny random Llama built from a config (``tiny_model_dir``, no download):
LoRA for SFT, DPO and critics with adapters that save and reload to the same outputs, dtype and
device selection, chat templates, and the gsm8k pipeline search -> data -> SFT -> eval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from alphallm.cli import main
from alphallm.errors import UserError
from alphallm.lm.hf import TransformersLM
from alphallm.lm.loading import chat_prompt, load_causal_lm, pick_device, pick_dtype
from alphallm.train.critic import CriticTrainConfig, train_critic
from alphallm.train.critic_data import predict
from alphallm.train.dpo import DPOConfig, Pair, dpo
from alphallm.train.dpo import training_steps as dpo_training_steps
from alphallm.train.labels import LabelRow
from alphallm.train.lora import is_peft_model, load_adapter
from alphallm.train.sft import SFTConfig, sft
from alphallm.train.sft import training_steps as sft_training_steps

ROWS = [
    (f"Problem: {a}+{b}\n", f"{a}+{b}={a + b}\nAnswer: {a + b}\n") for a in range(2, 6) for b in range(3, 8)
]
PAIRS = [Pair(prompt=p, chosen=c, rejected=c.replace("Answer", "Answr")) for p, c in ROWS[:8]]


def _logits(model: Any, tokenizer: Any, texts: list[str]) -> torch.Tensor:
    ids = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).logits


def _weights(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_lora_sft_trains_adapters_merges_them_and_the_adapter_reloads(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model, tokenizer = load_causal_lm(tiny_model_dir, dtype="float32")
    before = _weights(model)
    config = SFTConfig(epochs=3, batch_size=8, lr=1e-2, holdout=0.0, lora_r=4)
    metrics = sft(model, tokenizer, ROWS, config=config, adapter_dir=tmp_path / "adapter")
    # Only the adapters trained (rank 4 of 32x32 and 32x64 matrices: a sixth of this tiny model).
    assert 0 < metrics["trainable_parameters"] < sum(v.numel() for v in before.values()) / 5
    # Merged back in place: a plain model again, with the same keys and changed linear weights.
    assert not is_peft_model(model) and not any("lora" in name for name in model.state_dict())
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert not torch.equal(
        after["model.layers.0.self_attn.q_proj.weight"], before["model.layers.0.self_attn.q_proj.weight"]
    )
    assert torch.equal(
        after["model.embed_tokens.weight"], before["model.embed_tokens.weight"]
    )  # not a target
    texts = [p + c for p, c in ROWS[:4]]
    merged_logits = _logits(model, tokenizer, texts)

    # The saved policy (what the loop writes) reloads bit for bit.
    model.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    reloaded, _ = load_causal_lm(tmp_path / "policy", dtype="float32")
    assert torch.equal(_logits(reloaded, tokenizer, texts), merged_logits)

    # The adapter on a fresh base gives the same outputs (unmerged: equal up to float rounding).
    base, _ = load_causal_lm(tiny_model_dir, dtype="float32")
    with_adapter = load_adapter(base, tmp_path / "adapter")
    torch.testing.assert_close(_logits(with_adapter, tokenizer, texts), merged_logits, atol=1e-5, rtol=1e-5)
    # Loading an adapter twice is deterministic: identical, not just close.
    again = load_adapter(load_causal_lm(tiny_model_dir, dtype="float32")[0], tmp_path / "adapter")
    assert torch.equal(_logits(again, tokenizer, texts), _logits(with_adapter, tokenizer, texts))


def test_lora_sft_lowers_the_loss(tiny_model_dir: Path) -> None:
    model, tokenizer = load_causal_lm(tiny_model_dir, dtype="float32")
    rows = ROWS * 2 + ROWS[:4]  # 44 rows: 4 held out for early stopping, 40 trained in batches of 8
    config = SFTConfig(epochs=3, batch_size=8, lr=1e-2, lora_r=8)
    steps: list[int] = []
    metrics = sft(model, tokenizer, rows, config=config, on_step=lambda s, loss: steps.append(s))
    history = [h["held_out_loss"] for h in metrics["history"]]
    assert metrics["held_out_loss"] == min(history) < history[0]
    # The loop's progress bar is as long as the training: 5 batches a pass, not 6 for all 44 rows.
    assert len(steps) == sft_training_steps(len(rows), config) == 15


@pytest.mark.parametrize("explicit_reference", [True, False])
def test_lora_dpo_prefers_chosen_and_keeps_the_reference_frozen(
    tiny_model_dir: Path, tmp_path: Path, explicit_reference: bool
) -> None:
    model, tokenizer = load_causal_lm(tiny_model_dir, dtype="float32")
    reference = load_causal_lm(tiny_model_dir, dtype="float32")[0] if explicit_reference else None
    ref_before = _weights(reference) if reference is not None else None
    config = DPOConfig(epochs=4, batch_size=4, lr=1e-2, beta=0.5, lora_r=4)
    steps: list[int] = []
    metrics = dpo(
        model,
        reference,
        tokenizer,
        PAIRS,
        config=config,
        on_step=lambda s, loss: steps.append(s),
        adapter_dir=tmp_path / "adapter",
    )
    assert len(steps) == dpo_training_steps(len(PAIRS), config) == 8
    assert metrics["final"]["loss"] < metrics["first_loss"]
    assert metrics["final"]["margin"] > 0
    assert not is_peft_model(model)
    if reference is not None:  # the loop's case: the previous policy, passed in and never touched
        assert ref_before is not None
        assert all(torch.equal(v, ref_before[k]) for k, v in reference.state_dict().items())
    texts = [p.prompt + p.chosen for p in PAIRS[:3]]
    with_adapter = load_adapter(load_causal_lm(tiny_model_dir, dtype="float32")[0], tmp_path / "adapter")
    torch.testing.assert_close(
        _logits(with_adapter, tokenizer, texts), _logits(model, tokenizer, texts), atol=1e-5, rtol=1e-5
    )


def test_dpo_still_refuses_the_model_as_its_own_reference(tiny_model_dir: Path) -> None:
    model, tokenizer = load_causal_lm(tiny_model_dir, dtype="float32")
    with pytest.raises(ValueError, match="separate model"):
        dpo(model, model, tokenizer, PAIRS, config=DPOConfig(lora_r=4))


def _label_rows() -> list[LabelRow]:
    # Right answers are labelled 1, wrong ones 0; eight problems so that whole groups are held out.
    rows = []
    for i, (prompt, solution) in enumerate(ROWS[:16]):
        wrong = solution.replace("Answer: ", "Answer: 1")
        rows.append(LabelRow(prompt, solution, 1.0, group=f"p{i % 8}"))
        rows.append(LabelRow(prompt, wrong, 0.0, group=f"p{i % 8}"))
    return rows


def test_lora_critic_saves_its_adapter_and_reloads_to_identical_scores(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from alphallm.critics.learned import CriticModel

    base, tokenizer = load_causal_lm(tiny_model_dir, dtype="float32")
    rows = _label_rows()
    config = CriticTrainConfig(epochs=2, batch_size=8, lr=3e-3, holdout=0.25, lora_r=4)
    critic, metrics = train_critic(rows, base=base, tokenizer=tokenizer, kind="orm", config=config)
    assert metrics["trainable_parameters"] < 20_000 and "held_out" in metrics
    critic.save(tmp_path / "critic", tokenizer, {"base": str(tiny_model_dir)})

    backbone = tmp_path / "critic" / "backbone"
    assert (backbone / "adapter_config.json").is_file() and not (backbone / "model.safetensors").exists()
    meta = json.loads((tmp_path / "critic" / "critic.json").read_text())
    assert meta["lora_base"] == str(tiny_model_dir.resolve())

    loaded, loaded_tokenizer, _ = CriticModel.load(tmp_path / "critic", device="cpu")
    assert predict(loaded, loaded_tokenizer, rows) == predict(critic, tokenizer, rows)


def test_train_critic_cli_takes_lora_r(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trees = tmp_path / "trees"
    trees.mkdir()
    for i, (prompt, solution) in enumerate(ROWS[:12]):
        wrong = solution.replace("Answer: ", "Answer: 1")
        nodes = [
            {"id": 0, "parent": -1, "text": ""},
            {"id": 1, "parent": 0, "text": solution, "terminal": True, "verified": True},
            {"id": 2, "parent": 0, "text": wrong, "terminal": True, "verified": False},
        ]
        tree = {"problem_id": f"p{i}", "root": prompt, "nodes": nodes}
        (trees / f"p{i}.json").write_text(json.dumps(tree))
    out = tmp_path / "critic"
    argv = ["train-critic", "--kind", "orm", "--trees", str(trees), "--base", str(tiny_model_dir)]
    assert main([*argv, "--out", str(out), "--epochs", "1", "--lora-r", "2", "--device", "cpu"]) == 0
    assert (out / "backbone" / "adapter_config.json").is_file()
    assert main(["eval-critic", "--critic", str(out), "--trees", str(trees), "--dtype", "float32"]) == 0
    # Made negatives need an ORM and trees that name their task (these do not).
    assert main([*argv, "--out", str(tmp_path / "c2"), "--negatives", "2"]) == 2
    assert "--negatives needs trees of one named task" in capsys.readouterr().err
    argv[2] = "prm"
    assert main([*argv, "--out", str(tmp_path / "c3"), "--negatives", "2"]) == 2
    assert "for an ORM (not --kind prm)" in capsys.readouterr().err


def test_loop_config_takes_lora_r_in_learn_and_critics() -> None:
    from alphallm.loop_config import LoopConfig, build

    data = {"learn": {"sft": {"lora_r": 8}, "dpo": {"lora_r": 8}}, "critics": {"train": {"lora_r": 4}}}
    config = build(LoopConfig, data)
    assert (config.learn.sft.lora_r, config.learn.dpo.lora_r, config.critics.train.lora_r) == (8, 8, 4)
    assert LoopConfig().learn.sft.lora_r == 0  # full fine-tuning stays the default
    with pytest.raises(UserError, match=r"learn\.sft: lora_r"):
        build(LoopConfig, {"learn": {"sft": {"lora_r": -1}}})


def test_the_loops_training_dtype_is_train_dtype_or_by_stage_fp32_full_and_auto_with_lora(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every training stage loads its models in ``train_dtype``; unset, full fine-tuning loads fp32 and a
    stage with LoRA auto (bf16 on a GPU, fp32 here). A bf16 round trains LoRA SFT, DPO and an ORM and
    saves bf16 models."""
    from dataclasses import asdict

    from safetensors import safe_open

    import alphallm.lm.loading as loading
    from alphallm.loop import Loop
    from alphallm.loop_config import LoopConfig, build

    rollouts = [{"text": c, "verified": i % 2 == 0, "score": 0.0} for i, (_, c) in enumerate(ROWS)]
    trees = [
        {
            "problem_id": f"p{i}",
            "root": ROWS[i][0],
            "nodes": [
                {
                    "id": 0,
                    "parent": -1,
                    "text": "",
                    "terminal": False,
                    "verified": None,
                    "children": [],
                    "rollouts": rollouts[i : i + 6],
                }
            ],
        }
        for i in range(12)
    ]
    loaded: list[str | None] = []
    load = loading.load_causal_lm

    def spy(name: Any, **kwargs: Any) -> Any:
        loaded.append(kwargs.get("dtype"))
        return load(name, **kwargs)

    monkeypatch.setattr(loading, "load_causal_lm", spy)

    def train_round(out: Path, train_dtype: str | None, dpo_lora: int) -> Loop:
        learn = {"sft": {"lora_r": 4, "epochs": 1, "holdout": 0.0}, "dpo": {"lora_r": dpo_lora, "epochs": 1}}
        critics = {"kinds": ["orm"], "train": {"lora_r": 4, "epochs": 1, "batch_size": 16}}
        data = {"policy": str(tiny_model_dir), "out_dir": str(out), "train_dtype": train_dtype}
        loop = Loop(build(LoopConfig, {**data, "learn": learn, "critics": critics}))
        loop.round_dir(1).mkdir(parents=True)
        (loop.round_dir(1) / "trees.json").write_text(json.dumps({"trees": trees}))
        record = {"sft": ROWS, "pairs": [asdict(p) for p in PAIRS]}
        (loop.round_dir(1) / "data.json").write_text(json.dumps(record))
        loaded.clear()
        loop._stage_sft(1)  # type: ignore[attr-defined]
        assert loop._stage_dpo(1)["pairs"] == len(PAIRS)  # type: ignore[attr-defined]
        assert loop._stage_critics(1)["trained"] == ["orm"]  # type: ignore[attr-defined]
        return loop

    loop = train_round(tmp_path / "bf16", "bfloat16", 4)
    assert loaded == ["bfloat16"] * 4  # SFT; DPO's model and reference; the ORM's backbone
    for stage in ("sft", "policy"):
        with safe_open(str(loop.round_dir(1) / stage / "model.safetensors"), "pt") as f:
            keys = f.keys()  # safe_open has keys(), no __iter__
            assert {f.get_tensor(key).dtype for key in keys} == {torch.bfloat16}
    train_round(tmp_path / "default", None, 0)
    assert loaded == ["auto", "float32", "float32", "auto"]  # LoRA SFT; full DPO (both); LoRA critic
    with pytest.raises(UserError, match=r"train_dtype: float16 .*\(learn\.dpo without lora_r\)"):
        build(
            LoopConfig, {"train_dtype": "float16", "learn": {"sft": {"lora_r": 4}}, "critics": {"kinds": []}}
        )
    with pytest.raises(UserError, match=r"train_dtype: unknown dtype 'half'"):
        build(LoopConfig, {"train_dtype": "half"})


# -- devices, dtypes and chat templates ------------------------------------------------------------


def test_dtype_and_device_selection(tiny_model_dir: Path) -> None:
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32  # fp32 on CPU
    assert pick_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16  # an explicit choice wins
    if not torch.cuda.is_available():
        assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="unknown dtype"):
        pick_dtype("float8", torch.device("cpu"))
    with pytest.raises(UserError, match="unknown device"):
        pick_device("tpu:9")
    model, _ = load_causal_lm(tiny_model_dir, device="cpu", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_chat_template_wraps_the_prompt_once(tiny_model_dir: Path, tiny_chat_model_dir: Path) -> None:
    from alphallm.lm.loading import with_chat_template
    from alphallm.tasks import get_task

    _, tokenizer = load_causal_lm(tiny_model_dir)
    with pytest.raises(UserError, match="no chat template"):
        chat_prompt(tokenizer, "hi")
    _, tokenizer = load_causal_lm(tiny_chat_model_dir)
    text = chat_prompt(tokenizer, "What is 2+3?")
    assert text == "<|user|>What is 2+3?<|assistant|>"  # the template's BOS left to the tokenizer
    assert tokenizer(text)["input_ids"].count(tokenizer.bos_token_id) == 1
    task = get_task("arith")
    problem = task.problems("test")[0]
    chat_task = with_chat_template(task, tokenizer)
    prompt = chat_task.format_prompt(problem)
    assert prompt == f"<|user|>{task.format_prompt(problem)}<|assistant|>"
    assert chat_task.format_document(problem, "1+1=2\n") == prompt + "1+1=2\n"
    assert task.format_prompt(problem) != prompt  # the original task is untouched
    assert chat_task.check(problem, f"Answer: {problem.answer}\n")


def test_eval_cli_with_chat_template_and_dtype(tiny_chat_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    argv = ["eval", "--task", "arith", "--model", str(tiny_chat_model_dir), "--limit", "2", "--out", str(out)]
    assert main([*argv, "--chat-template", "--dtype", "float32", "--device", "cpu"]) == 0
    assert json.loads(out.read_text())["problems"] == 2
    lm = TransformersLM.from_pretrained(tiny_chat_model_dir, device="cpu")
    assert "<|assistant|>" in lm.tokenizer.chat_template


# -- the math task -----------------------------------------------------------------------------------

MATH_ROWS = [
    {"problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?", "solution": "We add: $\\boxed{\\frac{3}{4}}$."},
    {"problem": "Simplify $\\sqrt{18}$.", "solution": "$\\sqrt{18} = \\boxed{3\\sqrt{2}}$"},
    {"problem": "Solve $x^2 = 4$ for $x > 0$.", "solution": "Since $x > 0$,\n$x = \\boxed{2}$."},
    {"problem": "Write the point as a pair.", "solution": "It is $\\boxed{\\left( 1, -2 \\right)}$."},
    {"problem": "Which option?", "solution": "The answer is $\\boxed{\\text{(C)}}$.", "unique_id": "u5"},
    {"problem": "Give an interval.", "solution": "x", "answer": "[0, \\infty)"},
]


def _math_problems(tmp_path: Path) -> list[Any]:
    from alphallm.tasks import get_task, load_problems

    path = tmp_path / "math.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in MATH_ROWS))
    return load_problems(get_task("math"), path)


def test_math_loader_reads_boxed_answers_and_the_checker_accepts_every_gold_solution(tmp_path: Path) -> None:
    from alphallm.tasks import get_task, load_problems

    task = get_task("math")
    problems = _math_problems(tmp_path)
    assert [p.answer for p in problems] == [
        "\\frac{3}{4}",
        "3\\sqrt{2}",
        "2",
        "\\left( 1, -2 \\right)",
        "\\text{(C)}",
        "[0, \\infty)",
    ]
    assert problems[4].id == "u5" and task.format_prompt(problems[0]).endswith("\nSolution:\n")
    for problem, row in zip(problems[:5], MATH_ROWS):
        assert task.check(problem, row["solution"] + "\n") is True
    with pytest.raises(UserError, match="no problems"):
        task.problems("test")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "p?", "solution": "no box"}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:1: 'solution' has no"):
        load_problems(task, bad)


@pytest.mark.parametrize(
    ("solution", "expected"),
    [
        ("1/2+1/4\nAnswer: 0.75\n", True),  # numeric equivalence (math-verify)
        ("So $\\boxed{\\dfrac{3}{4}}$\n", True),
        ("So $\\boxed{\\frac{6}{8}}$\n", True),
        ("So $\\boxed{\\frac{1}{2}}$\n", False),
        ("So $\\boxed{3/4\n", False),  # unclosed: no answer
        ("first $\\boxed{1}$\nthen $\\boxed{\\frac34}$\n", False),  # the first answer line counts
    ],
)
def test_math_checker_judges_equivalent_forms(tmp_path: Path, solution: str, expected: bool) -> None:
    from alphallm.tasks import get_task

    task = get_task("math")
    assert task.check(_math_problems(tmp_path)[0], solution) is expected


def test_math_fallback_without_math_verify_compares_normalised_strings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from alphallm.tasks import math as math_task

    monkeypatch.setattr(math_task, "_math_verify", lambda: None)
    assert math_task.answers_equal("\\dfrac{3}{4}", "\\frac34")
    assert math_task.answers_equal("\\left( 1, -2 \\right)", "(1,-2)")
    assert math_task.answers_equal("10\\%", "10")
    assert not math_task.answers_equal("\\frac{3}{4}", "0.75")  # the documented blind spot


# -- gsm8k: search -> data -> SFT -> eval with a tiny model ------------------------------------------


def _gold_rows(task: Any, problems: list[Any]) -> list[tuple[str, str]]:
    """(prompt, gold solution) for the shipped GSM8K test problems (their released solutions)."""
    from importlib import resources

    text = resources.files("alphallm.tasks").joinpath("data/gsm8k_test.jsonl").read_text(encoding="utf-8")
    solutions = {row["question"].strip(): row["answer"] for row in map(json.loads, text.splitlines())}
    return [(task.format_prompt(p), solutions[p.question] + "\n") for p in problems]


def test_gsm8k_pipeline_search_data_sft_eval(tiny_model_dir: Path, tmp_path: Path) -> None:
    from alphallm.tasks import get_task
    from alphallm.train.data import sft_rows
    from alphallm.trees import read_trees

    task = get_task("gsm8k")
    problems = task.problems("test")[:20]
    # search: a tiny eta-MCTS over 20 problems, trees saved
    config = tmp_path / "search.yaml"
    config.write_text(
        "rollouts: 0\nmcts:\n  num_simulations: 2\n  c_min_root: 1\n  c_min: 1\n  max_depth: 2\n"
    )
    common = ["--task", "gsm8k", "--model", str(tiny_model_dir), "--limit", "20", "--device", "cpu"]
    search_out = tmp_path / "search.json"
    argv = ["search", *common, "--config", str(config), "--save-trees", str(tmp_path / "trees")]
    assert main([*argv, "--out", str(search_out)]) == 0
    trees = read_trees([tmp_path / "trees"])
    assert len(trees) == 20 and json.loads(search_out.read_text())["problems"] == 20
    # data: verified tree solutions (a random model finds none) plus the gold solutions
    rows = sft_rows(trees) + _gold_rows(task, problems)
    assert len(rows) >= 20 and all(task.check(p, c) for p, (_, c) in zip(problems, rows[-20:]))
    # SFT: the held-out loss falls; the saved policy is a plain model directory
    model, tokenizer = load_causal_lm(tiny_model_dir, dtype="float32")
    sft_config = SFTConfig(epochs=2, batch_size=6, lr=1e-2, holdout=0.1, max_length=256, lora_r=8)
    metrics = sft(model, tokenizer, rows, config=sft_config)
    losses = [h["held_out_loss"] for h in metrics["history"]]
    assert metrics["held_out_loss"] < losses[0]
    model.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    # eval: the trained policy decodes all 20 problems and the metrics are written
    eval_out = tmp_path / "eval.json"
    assert (
        main(
            [
                "eval",
                *common[:2],
                "--model",
                str(tmp_path / "policy"),
                "--limit",
                "20",
                "--out",
                str(eval_out),
            ]
        )
        == 0
    )
    result = json.loads(eval_out.read_text())
    assert result["problems"] == len(result["records"]) == 20 and 0.0 <= result["metrics"]["accuracy"] <= 1.0


def test_search_cli_with_chat_template_puts_the_template_in_every_tree(
    tiny_model_dir: Path, tiny_chat_model_dir: Path, tmp_path: Path
) -> None:
    model_dir = tiny_chat_model_dir
    trees, out = tmp_path / "trees", tmp_path / "search.json"
    argv = ["search", "--task", "arith", "--model", str(model_dir), "--limit", "2", "--simulations", "2"]
    argv += ["--save-trees", str(trees), "--out", str(out), "--chat-template", "--dtype", "float32"]
    assert main(argv) == 0
    roots = [json.loads(f.read_text())["root"] for f in sorted(trees.glob("*.json"))]
    assert len(roots) == 2
    assert all(r.startswith("<|user|>Q: ") and r.endswith("<|assistant|>") for r in roots)
    # Without a template, the flag is a one-line error.
    assert main(["search", "--task", "arith", "--model", str(tiny_model_dir), "--chat-template"]) == 2
