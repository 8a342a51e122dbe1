"""The run report of ``alphallm improve``: the r->Q* credit-assignment view and the page that holds it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from tests.saved_trees import small_tree

from alphallm.lm import load_lm
from alphallm.report.run_report import credit_assignment, write_report

PROMPT = "Q: 38+7*6-19\n7*6=42 -> 38+42-19\n"
CHOSEN, REJECTED = "38+42=80 -> 80-19\n", "38+42=81 -> 81-19\n"


@pytest.fixture(scope="module")
def trained_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its weights moved: a stand-in for a DPO-trained policy with the same tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    path = tmp_path_factory.mktemp("trained")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


def test_credit_is_beta_times_the_log_ratio_of_each_token(tiny_model_dir: Path, trained_dir: Path) -> None:
    beta = 0.1
    chosen, rejected = credit_assignment(
        str(trained_dir), str(tiny_model_dir), PROMPT, [CHOSEN, REJECTED], beta
    )
    policy, reference = load_lm(str(trained_dir)), load_lm(str(tiny_model_dir))
    for tokens, completion in ((chosen, CHOSEN), (rejected, REJECTED)):
        assert "".join(text for text, _ in tokens) == completion  # every token shown, in order
        ours = policy.logprobs([PROMPT], [completion])[0]
        theirs = reference.logprobs([PROMPT], [completion])[0]
        assert [v for _, v in tokens] == pytest.approx(
            [beta * (a - b) for a, b in zip(ours, theirs)], abs=1e-6
        )
        assert any(abs(v) > 1e-4 for _, v in tokens)
    # against itself every token's implicit reward is exactly zero
    same = credit_assignment(str(tiny_model_dir), str(tiny_model_dir), PROMPT, [CHOSEN], beta)[0]
    assert all(v == 0.0 for _, v in same)


def test_the_report_page_holds_the_table_plots_trees_and_credit_view(
    tmp_path: Path, tiny_model_dir: Path, trained_dir: Path
) -> None:
    run = tmp_path / "run"
    round_1 = run / "round-1"
    shutil.copytree(trained_dir, round_1 / "policy")
    (round_1 / "dpo.json").write_text(json.dumps({"pairs": 1, "steps": 1}))
    pair = {"prompt": PROMPT, "chosen": CHOSEN, "rejected": REJECTED, "terminal": False}
    (round_1 / "data.json").write_text(json.dumps({"pairs": [pair]}))
    (round_1 / "trees.json").write_text(json.dumps({"trees": [small_tree()]}))
    (round_1 / "gate.json").write_text(
        json.dumps({"accepted": True, "kept": "policy", "candidates": {"policy": 0.6, "sft": 0.5}})
    )
    solved_before = {f"p{i}": int(i < 2) for i in range(10)}
    solved_after = {f"p{i}": int(i < 8) for i in range(10)}
    metrics = [
        {"round": 0, "greedy": {"accuracy": 0.2, "tokens_per_problem": 40.0, "solved": solved_before}},
        {
            "round": 1,
            "accepted": True,
            "greedy": {"accuracy": 0.8, "tokens_per_problem": 42.0, "solved": solved_after},
        },
    ]

    (run / "kept-policy").symlink_to("round-1/policy")
    index = write_report(run, metrics, policies={0: str(tiny_model_dir), 1: str(round_1 / "policy")})
    page = index.read_text()
    assert "0.200" in page and "0.800" in page and "<b>+0.600 (z +3.7)</b>" in page
    assert "yes: SFT + DPO" in page  # the gate kept the DPO candidate
    assert (
        "The policy kept after round 1: <code>round-1/policy</code> (the run directory's <code>kept-policy"
        in page
    )
    assert page.count('src="data:image/png;base64,') == 2
    assert (index.parent / "accuracy.png").stat().st_size > 0 and (index.parent / "tokens.png").exists()
    assert 'href="trees-round-1.html"' in page and (index.parent / "trees-round-1.html").exists()
    # the credit view: round 1's policy against round 0's, one coloured span per token of each side
    assert "Round 1's DPO-trained policy" in page
    values = [float(v) for v in re.findall(r'<span title="([+-][0-9.]+)"', page)]
    expected = credit_assignment(
        str(round_1 / "policy"), str(tiny_model_dir), PROMPT, [CHOSEN, REJECTED], 0.1
    )
    assert values == pytest.approx([round(v, 3) for side in expected for _, v in side], abs=1e-3)
