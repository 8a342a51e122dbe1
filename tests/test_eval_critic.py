"""``alphallm eval-critic``: the tool verifier and learned critics scored against a tree's labels, a PRM
read as an ORM over a solution's steps, and a learned value with the verifier's dead ends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from alphallm.critics.learned import CriticModel
from alphallm.lm.loading import load_causal_lm
from alphallm.train.labels import LabelRow


def test_eval_critic_scores_the_tool_verifier_against_step_labels(tmp_path: Path) -> None:
    from alphallm.cli import main

    def rollouts(*verified: bool) -> list[dict[str, object]]:
        return [{"text": "...", "verified": v} for v in verified]

    nodes = [
        {"id": 0, "parent": -1, "text": ""},
        {"id": 1, "parent": 0, "text": "13-9=4 (left: 4 4 10)\n", "rollouts": rollouts(True, False)},
        {"id": 2, "parent": 0, "text": "13+10=23 (left: 4 9 23)\n", "rollouts": rollouts(False, False)},
    ]
    tree = {"task": "game24", "problem_id": "p", "root": "Input: 4 9 10 13\n", "nodes": nodes}
    (tmp_path / "p.json").write_text(json.dumps(tree))
    args = ["eval-critic", "--critic", "tool", "--kind", "prm", "--trees", str(tmp_path)]
    assert main([*args, "--out", str(tmp_path / "tool.out")]) == 0
    assert json.loads((tmp_path / "tool.out").read_text())["auc"] == 1.0  # the dead state is the error
    assert main([*args, "--no-reachability", "--out", str(tmp_path / "legal.out")]) == 0
    assert json.loads((tmp_path / "legal.out").read_text())["auc"] == 0.5  # both moves are legal
    assert main([*args, "--steps", "min", "--out", str(tmp_path / "steps.out")]) == 0  # one-step solutions
    assert json.loads((tmp_path / "steps.out").read_text())["auc"] == 1.0
    assert main(["eval-critic", "--critic", "tool", "--trees", str(tmp_path)]) == 2  # which labels?
    assert main([*args, "--task", "arith"]) == 2  # the trees name game24
    (tmp_path / "p.json").write_text(json.dumps({k: v for k, v in tree.items() if k != "task"}))
    assert main(args) == 2  # which task's tool?
    (tmp_path / "p.json").write_text(json.dumps({**tree, "root": "Question: 4 9 10 13\n"}))
    assert main(args) == 2  # not a game24 prompt


def test_eval_critic_gives_a_learned_value_the_verifiers_dead_ends(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from alphallm.cli import main

    base, tokenizer = load_causal_lm(str(tiny_model_dir))
    model = CriticModel(base, "value")
    last = model.head[-1]
    assert isinstance(last, torch.nn.Linear)
    torch.nn.init.zeros_(last.weight)  # scores 0.5 everywhere: no ranking of its own
    torch.nn.init.zeros_(last.bias)
    model.save(tmp_path / "critic", tokenizer, {"base": "tiny"})
    live, dead = "13-9=4 (left: 4 4 10)\n", "13+10=23 (left: 4 9 23)\n"
    nodes = [{"id": 0, "parent": -1, "text": ""}]
    for i, (text, verified) in enumerate([(live, [True, True]), (live, [True, False]), (dead, [False] * 2)]):
        nodes.append(
            {
                "id": i + 1,
                "parent": 0,
                "text": text,
                "rollouts": [{"text": "...", "verified": v} for v in verified],
            }
        )
    # Trees saved before they recorded their task (older loop rounds' trees.json): --task names it.
    (tmp_path / "trees.json").write_text(
        json.dumps({"trees": [{"problem_id": "p", "root": "Input: 4 9 10 13\n", "nodes": nodes}]})
    )
    args = ["eval-critic", "--critic", str(tmp_path / "critic"), "--trees", str(tmp_path / "trees.json")]
    assert main([*args, "--out", str(tmp_path / "alone.json")]) == 0
    assert json.loads((tmp_path / "alone.json").read_text())["spearman"] is None  # constant scores: NaN
    assert main([*args, "--dead-ends"]) == 2  # which task's verifier?
    assert main([*args, "--dead-ends", "--task", "game24", "--out", str(tmp_path / "dead.json")]) == 0
    metrics = json.loads((tmp_path / "dead.json").read_text())
    assert metrics["dead_ends"] == 1 and metrics["rows"] == 4  # the root, two live moves, one dead
    assert metrics["spearman"] > 0.5  # the dead move, the only 0, now ranks last
    assert (
        main(["eval-critic", "--critic", "tool", "--kind", "value", "--dead-ends", "--trees", str(tmp_path)])
        == 2
    )


def test_eval_critic_reports_no_auc_of_a_nan_critic(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from alphallm.cli import main

    base, tokenizer = load_causal_lm(str(tiny_model_dir))
    model = CriticModel(base, "orm")
    with torch.no_grad():
        model.head[-1].bias.fill_(float("nan"))  # what float16 full fine-tuning saved: NaN everywhere
    model.save(tmp_path / "critic", tokenizer, {"base": "tiny"})
    nodes = [{"id": 0, "parent": -1, "text": ""}]
    for i, verified in enumerate([True, False, True, False]):
        text = f"13-9=4 (left: 4 4 10)\n{i}\nAnswer: 24\n"
        nodes.append({"id": i + 1, "parent": 0, "text": text, "terminal": True, "verified": verified})
    tree = {"task": "game24", "problem_id": "p", "root": "Input: 4 9 10 13\n", "nodes": nodes}
    (tmp_path / "p.json").write_text(json.dumps(tree))
    args = ["eval-critic", "--critic", str(tmp_path / "critic"), "--trees", str(tmp_path / "p.json")]
    assert main([*args, "--out", str(tmp_path / "m.json")]) == 2  # printed an AUC of 0.5 on NaN scores
    assert "scores of the orm critic are NaN or infinite" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_a_prm_scores_whole_solutions_through_its_steps() -> None:
    from alphallm.commands.critic_cmd import combine_steps, step_prefixes

    row = LabelRow("Q\n", "3*4=12 -> 2+12\n2+12=14 -> 14\nAnswer: 14\n", 1.0, group="g")
    prefixes = step_prefixes(row)
    assert [p.solution for p in prefixes] == [
        "3*4=12 -> 2+12\n",
        "3*4=12 -> 2+12\n2+12=14 -> 14\n",
        row.solution,
    ]
    assert all(p.prompt == row.prompt and p.target == 1.0 and p.group == "g" for p in prefixes)
    assert [p.solution for p in step_prefixes(LabelRow("Q\n", "", 0.0))] == [""]
    scores = [0.9, 0.2, 0.8, 0.5, 0.5]  # a three-step solution, then a two-step one
    assert combine_steps(scores, [3, 2], "min") == [0.2, 0.5]
    assert combine_steps(scores, [3, 2], "prod") == pytest.approx([0.144, 0.25])


def test_eval_critic_on_the_trees_a_critic_trained_from_scores_its_held_out_problems_with_unseen(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Scored on its own training trees a critic's figures are partly in-sample: eval-critic says so, and
    ``--unseen`` scores only the problems it did not train on, as train-critic's held-out table does."""
    from alphallm.cli import main

    trees = tmp_path / "trees"
    trees.mkdir()
    for p in range(10):
        nodes = [{"id": 0, "parent": -1, "text": ""}]
        for i, verified in enumerate([True, False, p % 2 == 0, False]):
            text = f"{p}+{i}={p + i} -> {p + i}\nAnswer: {p + i + (not verified)}\n"
            nodes.append({"id": i + 1, "parent": 0, "text": text, "terminal": True, "verified": verified})
        tree = {"task": "arith", "problem_id": f"q{p}", "root": f"Q: {p}+{p}\n", "nodes": nodes}
        (trees / f"q{p}.json").write_text(json.dumps(tree))
    critic = tmp_path / "orm"
    train = ["train-critic", "--kind", "orm", "--trees", str(trees), "--base", str(tiny_model_dir)]
    assert main([*train, "--out", str(critic), "--epochs", "1", "--holdout", "0.3"]) == 0
    meta = json.loads((critic / "critic.json").read_text())
    assert len(meta["trained_problems"]) == 7 and set(meta["trained_problems"]) < {f"q{p}" for p in range(10)}
    capsys.readouterr()
    scored = ["eval-critic", "--critic", str(critic), "--trees", str(trees)]
    assert main([*scored, "--out", str(tmp_path / "all.json")]) == 0
    assert "7 of these problems trained the critic" in capsys.readouterr().out
    assert json.loads((tmp_path / "all.json").read_text())["in_sample_problems"] == 7
    assert main([*scored, "--unseen", "--out", str(tmp_path / "unseen.json")]) == 0
    unseen = json.loads((tmp_path / "unseen.json").read_text())
    assert unseen["rows"] == meta["held_out_rows"] == 12 and unseen["in_sample_problems"] == 0
    assert unseen["auc"] == pytest.approx(meta["held_out"]["auc"])
    # No problem left, or no record of them: one line each.
    for name in sorted(set(f"q{p}" for p in range(10)) - set(meta["trained_problems"])):
        (trees / f"{name}.json").unlink()
    assert main([*scored, "--unseen"]) == 2
    assert "trained on every problem of these trees" in capsys.readouterr().err
    del meta["trained_problems"]
    (critic / "critic.json").write_text(json.dumps(meta))
    assert main([*scored, "--unseen"]) == 2
    assert "does not name the problems it trained on" in capsys.readouterr().err


@pytest.fixture(scope="module")
def value_critic(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base, tokenizer = load_causal_lm(str(tiny_model_dir))
    directory = tmp_path_factory.mktemp("critic") / "value"
    CriticModel(base, "value").save(directory, tokenizer, {"base": "tiny"})
    return directory


def _broken(critic: Path, tmp_path: Path, how: str) -> Path:
    import shutil

    directory = tmp_path / how
    shutil.copytree(critic, directory)
    meta = directory / "critic.json"
    if how == "badjson":
        meta.write_text("{")
    elif how == "badkind":
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "kind": "vaule"}))
    elif how == "nohead":
        (directory / "head.safetensors").unlink()
    elif how == "truncated":
        head = directory / "head.safetensors"
        head.write_bytes(head.read_bytes()[:100])
    elif how == "nobackbone":
        shutil.rmtree(directory / "backbone")
    return directory


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("badjson", "critic.json is not valid JSON"),
        ("badkind", "critic.json kind 'vaule' is not one of value, prm, orm"),
        ("nohead", "no head.safetensors"),
        ("truncated", "head.safetensors is unreadable"),
        ("nobackbone", "no backbone directory"),
    ],
)
def test_a_broken_critic_directory_is_a_one_line_error(
    value_critic: Path, tmp_path: Path, how: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from alphallm.cli import main

    directory = _broken(value_critic, tmp_path, how)
    tree = {
        "task": "arith",
        "problem_id": "p",
        "root": "Q: 1+2\n",
        "nodes": [{"id": 0, "parent": -1, "text": ""}],
    }
    (tmp_path / "p.json").write_text(json.dumps(tree))
    args = ["eval-critic", "--critic", str(directory), "--trees", str(tmp_path / "p.json"), "--device", "cpu"]
    assert main(args) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after any "Loading weights" bar
    assert last.startswith(f"alphallm: error: {directory}: {message}")


def test_a_critic_is_loaded_only_as_its_own_kind(value_critic: Path) -> None:
    from alphallm.critics.learned import load_critics
    from alphallm.errors import UserError
    from alphallm.tasks import get_task

    task = get_task("arith")
    with pytest.raises(UserError, match=r"a value critic \(its critic\.json\), given as the prm critic"):
        load_critics({"prm": str(value_critic)}, task=task, device="cpu")
    assert load_critics({"value": str(value_critic)}, task=task, device="cpu")["value"].name == "value"


def test_an_unwritable_out_is_refused_before_the_critic_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import alphallm.critics.tool as tool
    from alphallm.cli import main

    def scored(*args: object, **kwargs: object) -> None:
        raise AssertionError("scored before --out was checked")

    monkeypatch.setattr(tool, "row_scores", scored)
    tree = {"task": "game24", "problem_id": "p", "root": "x", "nodes": []}
    (tmp_path / "p.json").write_text(json.dumps(tree))
    argv = ["eval-critic", "--critic", "tool", "--kind", "orm", "--trees", str(tmp_path)]
    argv += ["--out", str(tmp_path)]
    assert main(argv) == 2
    assert "is a directory; name a file to write" in capsys.readouterr().err
