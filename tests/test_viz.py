"""The search-tree viewer: escaping of the embedded data, the ``viz`` command, and a real headless browser."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.saved_trees import small_tree

from alphallm.commands import viz_cmd
from alphallm.errors import UserError
from alphallm.report import render_tree_html

DATA_BLOCK = re.compile(r'<script type="application/json" id="tree-data">(.*?)</script>', re.DOTALL)


def test_render_embeds_escaped_data() -> None:
    tree = small_tree()
    page = render_tree_html([tree], title="trees <of> arith")
    assert page.startswith("<!DOCTYPE html>") and "<title>trees &lt;of&gt; arith</title>" in page
    block = DATA_BLOCK.search(page)
    assert block is not None
    assert "</script><b>" not in block.group(1) and "<" not in block.group(1)
    assert json.loads(block.group(1)) == [tree]  # the \\u escapes decode back to the original text
    assert page.count("</script>") == 2  # the data block and the viewer script, nothing from the data
    assert "http://" not in page and "https://" not in page  # self-contained: nothing to fetch


def test_render_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        render_tree_html([], title="x")
    with pytest.raises(ValueError):
        render_tree_html([{"root": "Q"}], title="x")


def test_viz_command_writes_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "arith-test-0.json"
    src.write_text(json.dumps(small_tree()))
    assert viz_cmd.run(argparse.Namespace(trees=[str(src)], out=None)) == 0
    out = tmp_path / "arith-test-0.html"
    assert "arith-test-0" in out.read_text() and str(out) in capsys.readouterr().out

    folder = tmp_path / "trees"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(small_tree("a")))
    (folder / "b.json").write_text(json.dumps({"trees": [small_tree("b"), small_tree("c")]}))
    assert viz_cmd.run(argparse.Namespace(trees=[str(folder)], out=None)) == 0
    block = DATA_BLOCK.search((folder / "trees.html").read_text())
    assert block is not None
    assert [t["problem_id"] for t in json.loads(block.group(1))] == ["a", "b", "c"]


def test_a_loop_run_or_round_gives_its_trees_not_the_records_beside_them(tmp_path: Path) -> None:
    """``viz runs/<name>`` stopped at the run's meta.json ("not a search tree"): a loop run's directory
    now gives each round's trees.json in round order, and a round's directory its own."""
    from alphallm.trees import tree_files

    run = tmp_path / "demo"
    (run / "round-0").mkdir(parents=True)
    (run / "config.yaml").write_text("name: demo\n")
    (run / "meta.json").write_text("{}")
    (run / "round-0" / "eval.json").write_text("{}")
    for k in (1, 2, 10):
        (run / f"round-{k}").mkdir()
        (run / f"round-{k}" / "search.json").write_text("{}")
        (run / f"round-{k}" / "trees.json").write_text(json.dumps({"trees": [small_tree(f"p{k}")]}))
    assert tree_files([run]) == [run / f"round-{k}" / "trees.json" for k in (1, 2, 10)]
    assert tree_files([run / "round-2"]) == [run / "round-2" / "trees.json"]
    assert viz_cmd.run(argparse.Namespace(trees=[str(run)], out=None)) == 0
    block = DATA_BLOCK.search((run / "trees.html").read_text())
    assert block is not None and [t["problem_id"] for t in json.loads(block.group(1))] == ["p1", "p2", "p10"]
    with pytest.raises(UserError, match=r"round-0: no search trees .*round 0 only evaluates"):
        tree_files([run / "round-0"])
    plain = tmp_path / "round-3"  # named like a round, outside a run: a plain directory of trees
    plain.mkdir()
    (plain / "x.json").write_text(json.dumps(small_tree("x")))
    assert tree_files([plain]) == [plain / "x.json"]


@pytest.mark.parametrize(
    ("name", "content"),
    [("missing.json", None), ("broken.json", "{not json"), ("nodeless.json", '{"root": "Q"}')],
)
def test_viz_command_bad_input(tmp_path: Path, name: str, content: str | None) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=re.escape(name)) as info:
        viz_cmd.run(argparse.Namespace(trees=[str(path)], out=str(tmp_path / "out.html")))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out.html").exists()


def test_a_search_results_file_is_told_apart_from_trees(tmp_path: Path) -> None:
    # The file `search` names on its last line, and the one a user tries first.
    results = tmp_path / "arith-arith-base-mcts.json"
    results.write_text(json.dumps({"task": "arith", "model": "arith-base", "accuracy": 0.5, "results": []}))
    with pytest.raises(UserError, match=r"mcts\.json: a search's results, not its trees; .*--save-trees"):
        viz_cmd.run(argparse.Namespace(trees=[str(results)], out=str(tmp_path / "out.html")))


def _chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        pytest.skip("chromium is not installed (scripts/check_viz.sh installs it): no browser test")
    return path


def chromium_args(binary: str, profile: Path) -> list[str]:
    """Headless flags that keep the browser offline and quiet (no sync, updates or first-run pages)."""
    return [
        binary,
        "--headless",
        "--no-sandbox",  # tests may run as root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]


def test_browser_builds_the_tree(tmp_path: Path) -> None:
    binary = _chromium()
    first, second = small_tree("arith-test-0"), small_tree("arith-test-1")
    page = tmp_path / "viz.html"
    page.write_text(render_tree_html([first, second], title="browser test"), encoding="utf-8")
    done = subprocess.run(
        [*chromium_args(binary, tmp_path / "profile"), "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    dom = done.stdout
    assert done.returncode == 0 and "</html>" in dom, done.stderr[-2000:]
    # The JS ran: one element per node of the first tree (the selector shows one tree at a time).
    assert len(re.findall(r'class="node"', dom)) == len(first["nodes"])
    assert '<span class="mark ok">✓</span>' in dom and '<span class="mark bad">✗</span>' in dom
    assert "7*6=42 -&gt; 38+42-19<" in dom  # text rendered, trailing newline stripped
    assert "&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in dom and "<b>bold" not in dom  # text, not markup
    assert len(re.findall(r'class="row best', dom)) == 3  # most-visited path 0 -> 2 -> 4
    assert dom.index('data-id="2"') < dom.index('data-id="1"')  # children sorted by visits
    assert '<h1 id="problem">arith-test-0</h1>' in dom
    assert len(re.findall(r"<option value=\"\d\"", dom)) == 2  # the tree selector


def test_viz_refuses_an_unwritable_out_before_reading_and_a_malformed_tree(tmp_path: Path) -> None:
    src = tmp_path / "t.json"
    src.write_text(json.dumps(small_tree()))
    (tmp_path / "outdir").mkdir()
    for out, message in (
        (tmp_path / "outdir", "outdir: is a directory; name a file to write"),
        (src / "x.html", "t.json is not a directory"),
    ):
        with pytest.raises(UserError, match=re.escape(message)):
            viz_cmd.run(argparse.Namespace(trees=[str(src)], out=str(out)))
    broken = small_tree()
    del broken["nodes"][2]["parent"]  # once a KeyError in train-critic, a blank page here
    src.write_text(json.dumps(broken))
    with pytest.raises(UserError, match=re.escape(f"{src}: tree 1: node 2: 'parent' must be -1")):
        viz_cmd.run(argparse.Namespace(trees=[str(src)], out=str(tmp_path / "t.html")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outdir", "t.json"]
