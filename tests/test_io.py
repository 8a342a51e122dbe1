"""Atomic writes: a write that fails part-way leaves the finished file or directory as it was, and no
temporary file behind (what a killed or crashed run relies on to resume)."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.saved_trees import small_tree

from alphallm.errors import UserError
from alphallm.io import (
    atomic_dir,
    check_out_dir,
    check_out_file,
    dumps,
    read_json,
    read_yaml_mapping,
    write_json,
    write_text,
)
from alphallm.trees import read_trees, safe_file_names


class Interrupted(BaseException):
    """Stands for a KeyboardInterrupt or SystemExit arriving mid-write."""


class _Breaks:
    def __str__(self) -> str:
        raise Interrupted


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "round-1" / "sft.json"
    write_json(path, {"rows": 483})
    with pytest.raises(Interrupted):
        write_json(path, {"rows": 484, "broken": _Breaks()})  # dumps calls str() on it
    with pytest.raises(TypeError):
        write_text(path, 123)  # type: ignore[arg-type]  # fails inside the open temporary file
    assert json.loads(path.read_text()) == {"rows": 483}
    assert [p.name for p in path.parent.iterdir()] == ["sft.json"]


_KILLED_TEXT_WRITER = """
import os, signal, sys
from alphallm.io import write_text
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # killed after writing, before the rename
write_text(sys.argv[1], "x" * 100_000)
"""


def test_temporary_files_of_killed_writes_are_removed_from_a_directory_held_alone(tmp_path: Path) -> None:
    from alphallm.io import remove_temporary_files

    run = tmp_path / "run"
    write_json(run / "round-1" / "trees.json", {"trees": []})
    killed = subprocess.run([sys.executable, "-c", _KILLED_TEXT_WRITER, str(run / "round-1" / "trees.json")])
    assert killed.returncode == -signal.SIGKILL
    assert len(list((run / "round-1").glob(".trees.json.*.tmp"))) == 1  # 100 kB left behind
    assert remove_temporary_files(run) == 1
    assert [p.name for p in (run / "round-1").iterdir()] == ["trees.json"]
    assert json.loads((run / "round-1" / "trees.json").read_text()) == {"trees": []}


def test_a_failed_directory_write_keeps_the_old_directory(tmp_path: Path) -> None:
    target = tmp_path / "policy"
    with atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("{}")
        (tmp / "model.safetensors").write_text("round 1")
    with pytest.raises(Interrupted), atomic_dir(target) as tmp:
        (tmp / "model.safetensors").write_text("half of round 2")
        raise Interrupted
    assert (target / "model.safetensors").read_text() == "round 1"
    with atomic_dir(target) as tmp:  # a finished write replaces it whole
        (tmp / "config.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["policy"]


_KILLED_WRITER = """
import os, signal, sys
from alphallm.io import atomic_dir
with atomic_dir(sys.argv[1]) as tmp:
    (tmp / "config.json").write_text("{}")
    (tmp / "model.safetensors").write_text("half of round 2")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_directory_writes_copy_is_cleaned_up_by_the_next_writer_a_live_ones_is_not(
    tmp_path: Path,
) -> None:
    from alphallm.io import _hold

    target = tmp_path / "policy"
    with atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("{}")
        (tmp / "model.safetensors").write_text("round 1")
    killed = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(target)], check=False)
    assert killed.returncode == -signal.SIGKILL
    (stale,) = tmp_path.glob(".policy.*.tmp")  # a full copy of the weights, with a real model
    assert (stale / "model.safetensors").read_text() == "half of round 2"
    with atomic_dir(target) as tmp:  # a copy changed a moment ago may be a writer's not locked yet
        (tmp / "config.json").write_text("{}")
    assert stale.exists()
    os.utime(stale, (time.time() - 120, time.time() - 120))
    live = tmp_path / ".policy.live.tmp"  # another process's write in progress
    live.mkdir()
    fd = _hold(live)
    try:
        with atomic_dir(target) as tmp:
            (tmp / "config.json").write_text("{}")
            (tmp / "model.safetensors").write_text("round 2")
        assert sorted(p.name for p in tmp_path.iterdir()) == [".policy.live.tmp", "policy"]
    finally:
        assert fd is not None
        os.close(fd)
    assert (target / "model.safetensors").read_text() == "round 2"


_BUSY_WRITER = """
import sys
from alphallm.io import atomic_dir
for i in range(int(sys.argv[2])):
    with atomic_dir(sys.argv[1]) as tmp:
        (tmp / "critic.json").write_text(sys.argv[3])
        (tmp / "head.safetensors").write_text(str(i))
"""


def test_writers_of_one_directory_at_once_never_remove_each_others_copies(tmp_path: Path) -> None:
    target = tmp_path / "orm"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _BUSY_WRITER, str(target), "150", name], stderr=subprocess.PIPE
        )
        for name in ("a", "b", "c")
    ]
    errors = [writer.communicate()[1].decode() for writer in writers]
    assert errors == ["", "", ""] and [w.returncode for w in writers] == [0, 0, 0]
    assert (target / "critic.json").read_text() in ("a", "b", "c")
    assert (target / "head.safetensors").read_text() == "149"
    assert [p.name for p in tmp_path.iterdir()] == ["orm"]


def test_a_directory_is_replaced_in_one_step_and_a_two_step_replace_cut_short_is_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alphallm import io

    target = tmp_path / "orm"
    for round_ in (1, 2):
        with atomic_dir(target) as tmp:
            (tmp / "critic.json").write_text(f"round {round_}")
    assert [p.name for p in tmp_path.iterdir()] == ["orm"]
    assert (target / "critic.json").read_text() == "round 2"
    (tmp_path / "a").mkdir()
    assert io._exchange(tmp_path / "a", target)  # Linux swaps in one rename here
    assert (tmp_path / "a" / "critic.json").read_text() == "round 2" and not any(target.iterdir())
    (tmp_path / "a").rename(target.with_name("orm-back"))
    target.rmdir()
    target.with_name("orm-back").rename(target)

    # Where it cannot (another OS or file system), a kill between the two renames leaves the old
    # content under a hidden name and no ``orm``: the next write of ``orm`` puts it back first.
    monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    target.rename(tmp_path / ".orm.old")
    with pytest.raises(Interrupted), atomic_dir(target) as tmp:
        assert (target / "critic.json").read_text() == "round 2"
        raise Interrupted
    assert [p.name for p in tmp_path.iterdir()] == ["orm"]
    with atomic_dir(target) as tmp:
        (tmp / "critic.json").write_text("round 3")
    assert [p.name for p in tmp_path.iterdir()] == ["orm"]
    assert (target / "critic.json").read_text() == "round 3"


def test_non_finite_floats_are_written_as_null() -> None:
    text = dumps({"z": math.inf, "r": [math.nan, 0.5]})
    assert json.loads(text) == {"z": None, "r": [None, 0.5]} and "Infinity" not in text


# -- what an output may replace, and where it may go ---------------------------------------------
def test_atomic_dir_never_replaces_a_directory_or_file_it_did_not_write(tmp_path: Path) -> None:
    data = tmp_path / "trees"
    data.mkdir()
    (data / "arith-test-0.json").write_text("{}")
    # without a marker the new content decides: refused after it is written, and kept beside
    refused = pytest.raises(
        UserError, match="trees exists and is not a critic directory; choose another --out"
    )
    with refused, atomic_dir(data) as tmp:
        (tmp / "critic.json").write_text("{}")
    assert [p.name for p in data.iterdir()] == ["arith-test-0.json"]
    assert (tmp_path / "trees.new" / "critic.json").exists()
    # with a marker: refused before the work
    ran = False
    with pytest.raises(UserError, match="not a model directory"), atomic_dir(data, marker="config.json"):
        ran = True
    assert not ran
    note = tmp_path / "notes.txt"
    note.write_text("mine")
    refused = pytest.raises(UserError, match=r"notes\.txt exists and is not a model directory")
    with refused, atomic_dir(note, marker="config.json"):
        pass
    with pytest.raises(UserError, match=r"notes\.txt exists"), atomic_dir(note):
        pass
    assert note.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "trees", "trees.new"]


def test_atomic_dir_replaces_what_its_writer_wrote(tmp_path: Path) -> None:
    critic, model, empty = tmp_path / "critic", tmp_path / "model", tmp_path / "empty"
    for path, names in ((critic, ["critic.json", "notes.md"]), (model, ["config.json", "model.bin"])):
        path.mkdir()
        for name in names:
            (path / name).write_text("old")
    empty.mkdir()
    with atomic_dir(critic) as tmp:  # shares the critic marker: a retrained critic
        (tmp / "critic.json").write_text("new")
    with atomic_dir(model, marker="config.json") as tmp:
        (tmp / "config.json").write_text("new")
    with atomic_dir(empty) as tmp:
        (tmp / "anything").write_text("new")
    assert [p.read_text() for p in (critic / "critic.json", model / "config.json")] == ["new", "new"]
    assert not (critic / "notes.md").exists() and (empty / "anything").exists()
    # a model directory is not a critic's: a critic written to it is refused
    refused = pytest.raises(UserError, match="model exists and is not a critic directory")
    with refused, atomic_dir(model) as tmp:
        (tmp / "critic.json").write_text("{}")


def test_written_files_and_directories_get_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {})
        with atomic_dir(tmp_path / "model") as tmp:
            write_text(tmp / "config.json", "{}")
        os.umask(0o077)
        write_text(tmp_path / "private.txt", "")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "model" / "config.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600


def test_a_write_that_cannot_happen_is_one_line_naming_the_users_path(tmp_path: Path) -> None:
    (tmp_path / "existing.txt").write_text("x")
    (tmp_path / "outdir").mkdir()
    below_a_file = tmp_path / "existing.txt" / "x.json"
    cases = {
        below_a_file: f"{below_a_file}: cannot write ({tmp_path / 'existing.txt'} is not a directory)",
        tmp_path / "outdir": f"{tmp_path / 'outdir'}: cannot write (it is a directory)",
    }
    for path, message in cases.items():
        with pytest.raises(UserError) as info:
            write_json(path, {})
        assert str(info.value) == message  # the user's path, not the temporary file beside it
    with pytest.raises(UserError, match=re.escape(cases[below_a_file])), atomic_dir(below_a_file):
        pass


def test_output_paths_are_checked_before_the_work(tmp_path: Path) -> None:
    (tmp_path / "existing.txt").write_text("x")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="data: is a directory; name a file to write"):
        check_out_file(tmp_path / "data")
    with pytest.raises(UserError, match=r"x\.json: cannot write \(.*existing\.txt is not a directory\)"):
        check_out_file(tmp_path / "existing.txt" / "x.json")
    with pytest.raises(UserError, match="data exists and is not a model directory; choose another --out"):
        check_out_dir(tmp_path / "data", marker="config.json", what="model")
    with pytest.raises(
        UserError, match=r"existing\.txt exists and is not a trees directory; choose another --s"
    ):
        check_out_dir(tmp_path / "existing.txt", what="trees", flag="--save-trees")
    if Path("/proc/self").is_dir():  # a place no one may write, not even root
        with pytest.raises(UserError, match=r"/proc/x\.json: cannot write in /proc"):
            check_out_file("/proc/x.json")
    assert check_out_file(tmp_path / "new" / "deeper" / "x.json") == tmp_path / "new" / "deeper" / "x.json"
    assert check_out_dir(tmp_path / "data") == tmp_path / "data"  # files go into it: fine
    assert not (tmp_path / "new").exists()  # nothing made before the work
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "existing.txt"]  # no probe left


def test_safe_file_names_stay_inside_the_directory_and_distinct() -> None:
    ids = ["sub/x", "../../escaped", "a", "a", "A", "sub_x", "", "..", "問題 1"]
    names = safe_file_names(ids)
    assert len(set(n.lower() for n in names)) == len(ids)
    assert all("/" not in n and not n.startswith(".") and n.endswith(".json") for n in names)
    assert names[2] == "a.json" and names[5] == "sub_x.json"  # safe ids keep their names
    assert names[0] == "sub_x-2.json" and names[8] == "問題_1.json"


# -- reading ---------------------------------------------------------------------------------------
def _tree_file(tmp_path: Path, change: Any) -> Path:
    tree = small_tree()
    change(tree)
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"trees": [small_tree(), tree]}))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("root"), "tree 2: 'root' must be the prompt text"),
        (lambda t: t["nodes"][3].pop("parent"), "tree 2: node 3: 'parent' must be -1"),
        (lambda t: t["nodes"][1].update(parent=7), "tree 2: node 1: 'parent' must be -1"),
        (lambda t: t["nodes"][2].update(id="2"), "tree 2: node 2: 'id' must be an integer"),
        (lambda t: t["nodes"].__setitem__(4, "node"), "tree 2: node 4: not a JSON object"),
        (lambda t: t["nodes"][0].update(children=[1, 9]), "tree 2: node 0: 'children' names a node"),
        (lambda t: t["nodes"][1].update(text=None), "tree 2: node 1: 'text' must be a string"),
        (lambda t: t["nodes"][2].update(rollouts=[{"score": 1}]), "tree 2: node 2: 'rollouts' must be"),
        (lambda t: t["nodes"][4].update(verified="yes"), "tree 2: node 4: 'verified' must be"),
        (lambda t: t.update(nodes=[]), "tree 2: 'nodes' is empty"),
    ],
)
def test_read_trees_names_the_tree_and_what_is_wrong(tmp_path: Path, change: Any, message: str) -> None:
    path = _tree_file(tmp_path, change)
    with pytest.raises(UserError) as info:
        read_trees([path])
    assert str(info.value).startswith(f"{path}: {message}")
    assert "\n" not in str(info.value)


def test_json_with_a_byte_order_mark_reads_and_bad_config_paths_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(small_tree()).encode())
    assert read_trees([path])[0]["root"] == small_tree()["root"]
    assert read_json(path)["nodes"][0]["id"] == 0
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbfseed: 3\n")
    assert read_yaml_mapping(tmp_path / "bom.yaml") == {"seed": 3}
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    for path, message in (
        (tmp_path, "is a directory, not a config file"),
        (tmp_path / "latin1.yaml", "not UTF-8 text"),
        (tmp_path / "missing.yaml", "no such config file"),
    ):
        with pytest.raises(UserError, match=f"^{re.escape(str(path))}: {message}"):
            read_yaml_mapping(path)
