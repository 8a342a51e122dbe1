"""``runs/<name>/kept-policy``: the policy a loop run's gates kept last, the one to evaluate or start from.
A round's ``policy`` directory is only its SFT + DPO candidate, which its gate may have rejected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from test_loop import TINY


def test_the_run_links_the_policy_its_gates_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link follows the gates (evaluating the demo's rejected ``round-1/policy`` gave 0.10 where the run
    reported 0.11, for its kept ``round-1/sft``), and a run or round given as a model says where they are."""
    from alphallm.cli import main
    from alphallm.lm.loading import SHIPPED_MODELS_DIR, resolve_model_path
    from alphallm.loop import Loop
    from alphallm.loop_config import LoopConfig, build

    loop = Loop(build(LoopConfig, {**TINY, "out_dir": str(tmp_path)}))
    loop._write_meta()  # type: ignore[attr-defined]
    link = loop.dir / "kept-policy"
    assert (
        loop.link_kept_policy(0) == link and link.resolve() == (SHIPPED_MODELS_DIR / "arith-base").resolve()
    )
    for k, gate in ((1, {"accepted": True, "kept": "sft"}), (2, {"accepted": False, "kept": "policy"})):
        for candidate in ("sft", "policy"):
            (loop.round_dir(k) / candidate).mkdir(parents=True)
            (loop.round_dir(k) / candidate / "config.json").write_text("{}")
        (loop.round_dir(k) / "gate.json").write_text(json.dumps(gate))
        loop.link_kept_policy(k)
        assert link.readlink() == Path("round-1/sft")  # round 2's gate kept neither: round 1's stays
    assert resolve_model_path(link) == str(link)
    # A starting policy given relative to where the run was started, not to the run directory.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "start").mkdir()
    (tmp_path / "start" / "config.json").write_text("{}")
    started = Loop(build(LoopConfig, {**TINY, "policy": "start", "out_dir": str(tmp_path), "name": "rel"}))
    started._write_meta()  # type: ignore[attr-defined]
    assert started.link_kept_policy(0) == tmp_path / "rel" / "kept-policy"
    assert (tmp_path / "rel" / "kept-policy").resolve() == tmp_path / "start"
    loop.round_dir(0).mkdir()
    for given, hint in ((loop.dir, f"its kept policy is {link}"), (loop.round_dir(1), "its gate.json says")):
        assert main(["eval", "--task", "arith", "--model", str(given)]) == 2
        err = capsys.readouterr().err
        assert "not a model directory" in err and hint in err and len(err.strip().splitlines()) == 1
    # Where links cannot be made the run goes on, and says where its policy is.
    messages: list[str] = []
    loop.ui = type("Recorder", (), {"message": lambda self, text: messages.append(text)})()

    def refused(self: Path, target: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    link.unlink()
    monkeypatch.setattr(Path, "symlink_to", refused)
    assert loop.link_kept_policy(2) is None and not link.is_symlink()
    [message] = messages
    assert message.startswith(f"no kept-policy link: {link}: cannot link to round-1/sft (")
    assert message.endswith(f"; the policy kept is {loop.dir / 'round-1/sft'}")


def test_a_run_started_from_another_runs_kept_policy_keeps_its_policy_when_the_link_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alphallm.commands.improve_cmd import _pin_links
    from alphallm.errors import UserError
    from alphallm.lm.loading import SHIPPED_MODELS_DIR
    from alphallm.loop import Loop
    from alphallm.loop_config import LoopConfig, build

    monkeypatch.chdir(tmp_path)
    for k in (1, 2):
        (tmp_path / "runs" / "old" / f"round-{k}" / "sft").mkdir(parents=True)
    link = Path("runs/old/kept-policy")
    link.symlink_to("round-1/sft")
    given = {**TINY, "policy": str(link), "out_dir": "runs", "name": "new"}
    given["search"] = {**TINY["search"], "anchor": str(tmp_path / link)}
    config = _pin_links(build(LoopConfig, given))
    assert config.policy == "runs/old/round-1/sft"  # relative as given
    assert config.search.anchor == str(tmp_path / "runs/old/round-1/sft")
    assert config.evaluate.search.anchor is None
    Loop(config)._write_meta()  # type: ignore[attr-defined]
    assert yaml.safe_load(Path("runs/new/config.yaml").read_text())["policy"] == "runs/old/round-1/sft"
    link.unlink()
    link.symlink_to("round-2/sft")  # the old run went on: resuming the new one from its config is refused
    with pytest.raises(UserError, match="cannot resume as policy 'runs/old/round-2/sft'"):
        Loop(_pin_links(build(LoopConfig, given)))._write_meta()  # type: ignore[attr-defined]
    link.unlink()
    link.symlink_to(SHIPPED_MODELS_DIR / "arith-base")  # a shipped model goes by its name
    assert _pin_links(build(LoopConfig, given)).policy == "arith-base"
