"""Atomic file and directory writes (a killed process never leaves a half-written output behind),
checks that an output path can be written before the work that fills it, and the lock that keeps two
processes out of one run directory."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alphallm.errors import UserError, first_line

__all__ = [
    "InUseError",
    "atomic_dir",
    "check_out_dir",
    "check_out_file",
    "dumps",
    "exclusive",
    "files_identity",
    "read_input",
    "read_input_text",
    "read_json",
    "remove_temporary_files",
    "write_json",
    "write_link",
    "write_text",
]

# The file that marks a directory as a model (``save_pretrained``), a critic (``LearnedCritic.save``) or
# saved trees (``trees.write_trees``): ``atomic_dir`` replaces a directory holding one with new content
# holding the same one.
MARKERS = {"config.json": "model", "critic.json": "critic", "search.yaml": "trees"}


def write_text(path: str | Path, text: str) -> None:
    """Writes ``text`` to a temporary file beside ``path``, then renames it into place. A path that
    cannot be written is a one-line UserError naming ``path`` (not the temporary file)."""
    path = Path(path)
    try:
        _write_text(path, text)
    except OSError as exc:
        raise UserError(f"{path}: cannot write ({_why_not(path, exc)})") from None


def write_link(path: str | Path, target: str | Path) -> None:
    """Points the symbolic link ``path`` at ``target`` in one step (a new link renamed over the old), so
    a reader never finds it missing. ``target`` relative to ``path``'s directory survives moving both."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.link")
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{path}: cannot link to {target} ({_why_not(path, exc)})") from None


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); the result is an ordinary file, as open() would make it
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask. Linux shows it in /proc; elsewhere the only way to read it is to set it and
    set it back, which a thread creating a file at that moment could see."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _why_not(path: Path, exc: OSError) -> str:
    """Why ``path`` could not be written, in words about the user's path: the OSError itself names the
    temporary file beside it."""
    if path.is_dir():
        return "it is a directory"
    blocking = _first_existing(path.parent)
    if not blocking.is_dir():
        return f"{blocking} is not a directory"
    return exc.strerror or type(exc).__name__


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (the directory a new path would be made in)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def dumps(data: Any, **kwargs: Any) -> str:
    """JSON text of ``data`` that strict readers accept: a non-finite float (a z-score of an se of 0, a
    correlation of constant scores) is written as null, not as Python's ``Infinity`` or ``NaN``, which jq,
    JavaScript and most JSON libraries outside Python reject."""
    return json.dumps(_finite(data), allow_nan=False, default=str, **kwargs)


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(value) for value in data]
    return data


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, dumps(data, indent=2) + "\n")


def read_input(path: str | Path, what: str) -> bytes:
    """The bytes of an input file; a missing or unreadable one, or a directory, is one line naming
    it as ``what`` ("config file")."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a {what}") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_input_text(path: str | Path, what: str) -> str:
    """``read_input`` as UTF-8 text; a UTF-8 byte-order mark (Windows editors write one) is skipped."""
    try:
        return read_input(path, what).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text (is it a {what}?)") from None


def read_json(path: str | Path) -> Any:
    """The JSON in ``path``; an unreadable file or bad JSON is one line naming it."""
    text = read_input_text(path, "JSON file")
    try:
        # NaN/Infinity would survive json.loads but break JSON.parse in a page: read them as null.
        return json.loads(text, parse_constant=lambda _: None)
    except ValueError as exc:  # JSONDecodeError
        raise UserError(f"{path}: not valid JSON ({exc})") from None


def check_out_file(path: str | Path) -> Path:
    """``path`` as an output file, refused now, before the work that fills it, if it could not be
    written after: a directory, a path below a file, a place this process may not write."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory; name a file to write")
    _check_writable_parent(path)
    return path


def check_out_dir(
    path: str | Path, *, marker: str | None = None, what: str = "output", flag: str = "--out"
) -> Path:
    """``path`` as an output directory (one ``atomic_dir(path, marker=marker)`` will replace, or one files
    are written into), refused now, before the work that fills it: a file, a directory of another kind
    than ``marker`` says, a place this process may not write. ``what`` and ``flag`` name it in the error."""
    path = Path(path)
    if _may_not_replace(path, marker=marker):
        raise _not_ours(path, what, flag=flag)
    for where in {_first_existing(path), _first_existing(path.parent)}:  # files go in; a new one beside
        _check_writable(path, where)
    return path


def _check_writable_parent(path: Path) -> None:
    _check_writable(path, _first_existing(path.parent))


def _check_writable(path: Path, where: Path) -> None:
    """Refuses ``path`` unless a file can be made in ``where`` (its nearest existing ancestor): tried, as
    permissions, read-only mounts and /proc all differ."""
    if not where.is_dir():
        raise UserError(f"{path}: cannot write ({where} is not a directory)")
    try:
        fd, probe = tempfile.mkstemp(dir=where, prefix=".alphallm-probe-")
    except OSError as exc:
        raise UserError(f"{path}: cannot write in {where} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


@contextmanager
def atomic_dir(path: str | Path, *, marker: str | None = None, what: str | None = None) -> Iterator[Path]:
    """Yields a temporary directory; on success it replaces ``path`` in one rename.

    An existing ``path`` is replaced only when it is what this writer writes, so that a mistyped
    ``--out`` never deletes a user's data: with ``marker``, an empty directory or one holding that file
    (``config.json`` for a model); without, one whose every entry the new content also has, or that shares
    a marker of ``MARKERS`` with it. A file, or another directory, is refused with a one-line UserError
    (``what`` names the kind in it); refused after the work, the new content is kept beside ``path``."""
    path = Path(path)
    _clean_up_after_kills(path)
    if _may_not_replace(path, marker=marker):
        raise _not_ours(path, what or MARKERS.get(marker or "", "output"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as exc:
        raise UserError(f"{path}: cannot write ({_why_not(path, exc)})") from None
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary directory
    held = _hold(tmp)  # tells a later writer of ``path`` that this copy is live, not a killed run's
    try:
        yield tmp
        written = {p.name for p in tmp.iterdir()}
        kind = what or next((MARKERS[m] for m in MARKERS if m in written), "output")
        if _may_not_replace(path, marker=marker, written=written):
            kept = _keep_beside(tmp, path)
            raise _not_ours(path, kind, f" (this run's {kind} is in {kept})")
        _replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if held is not None:
            os.close(held)


def _hold(directory: Path) -> int | None:
    """An open descriptor holding an exclusive lock on ``directory``; the OS drops it when the process
    dies. None where there is no flock (Windows)."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return None
    fcntl.flock(fd, fcntl.LOCK_EX)  # just made, so no one else holds it
    return fd


# Seconds after its last change before an unlocked temporary copy counts as a killed writer's.
_SETTLED = 60.0


def _clean_up_after_kills(path: Path) -> None:
    """What a killed ``atomic_dir`` writer of ``path`` left beside it: its temporary copies (with a real
    model, each a full copy of the weights), recognised by a lock nobody holds, so that a live writer's
    copy is left alone; and, where ``_replace`` had to take two renames, the old content a kill between
    them left as ``.<name>.old`` with no ``path``, which is put back. Two processes writing one path at
    once (each then replaces the other's result) keep their own copies."""
    try:
        import fcntl
    except ImportError:
        return
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and not path.exists() and not path.is_symlink():
        with contextlib.suppress(OSError):  # another writer put it back first
            old.rename(path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            # A writer locks its copy just after making it: one changed a moment ago may be unlocked yet.
            if stale.is_symlink() or not stale.is_dir() or time.time() - stale.stat().st_mtime < _SETTLED:
                continue
            fd = os.open(stale, os.O_RDONLY)
        except OSError:  # gone meanwhile (another writer cleaned it), or not ours to open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(stale, ignore_errors=True)  # under the lock: no writer takes it meanwhile
        except OSError:
            continue  # another process is writing it now
        finally:
            os.close(fd)


def _may_not_replace(path: Path, *, marker: str | None, written: set[str] | None = None) -> bool:
    """Whether ``path`` exists as something an ``atomic_dir`` writer may not replace (see there).
    Without ``marker`` nor the new content's names (``written``), only a file can be told apart yet."""
    if not path.exists() and not path.is_symlink():
        return False
    return not path.is_dir() or _foreign(path, marker=marker, written=written)


def _not_ours(path: Path, what: str, more: str = "", flag: str = "--out") -> UserError:
    return UserError(f"{path} exists and is not a {what} directory; choose another {flag}{more}")


def _foreign(path: Path, *, marker: str | None, written: set[str] | None) -> bool:
    held = {p.name for p in path.iterdir()}
    if not held:
        return False
    if marker is not None:
        return marker not in held
    if written is None:
        return False  # cannot tell before the content exists: decided again after it
    return not (held <= written or held & written & MARKERS.keys())


def _replace(tmp: Path, path: Path) -> None:
    """Puts ``tmp`` at ``path`` in one step, an existing ``path`` included (swapped, then removed)."""
    if not path.exists():
        tmp.rename(path)
        return
    if _exchange(tmp, path):
        shutil.rmtree(tmp, ignore_errors=True)  # the old content, now under the temporary name
        return
    # Two renames: a kill between them leaves no ``path``, put back by ``_clean_up_after_kills``.
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths atomically (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False where the C
    library, the kernel or the file system cannot, and the caller falls back to two renames."""
    if sys.platform != "linux":
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library older than glibc 2.28, or another one
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_cwd, exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _keep_beside(tmp: Path, path: Path) -> Path:
    """Moves finished content that may not replace ``path`` to a free visible name beside it: a refusal
    after hours of training must not lose the result."""
    n = 1
    while True:
        kept = path.with_name(f"{path.name}.new" + (f"-{n}" if n > 1 else ""))
        if not kept.exists() and not kept.is_symlink():
            tmp.rename(kept)
            return kept
        n += 1


class InUseError(UserError):
    """``exclusive`` refused: another live process holds the directory, so nothing in it is ours."""


@contextmanager
def exclusive(directory: str | Path, what: str) -> Iterator[None]:
    """Holds ``directory``'s lock file while the block runs; a second process is refused with a
    one-line error. The OS drops the lock when its holder dies, so a killed run leaves none behind."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): run unguarded rather than not at all
        yield
        return
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise InUseError(
                f"{directory} is in use by another {what} (pid {holder}); wait for it or stop it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_temporary_files(directory: str | Path) -> int:
    """Removes the temporary files killed ``write_text`` calls left under ``directory`` (hidden
    ``.NAME.*.tmp`` files; a copy of a large JSON each), and returns how many. Only for a directory the
    caller holds alone (``exclusive``): a live writer's file would go too."""
    removed = 0
    for path in Path(directory).rglob(".*.tmp"):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def files_identity(directory: str | Path) -> list[list[Any]]:
    """Name, size and modification time of every file under ``directory`` (hidden ones aside): enough to
    tell that a model or critic was rewritten since a saved result was made with it (retrained in
    place), and cheap for a model of many GB, where a hash would read it all. An atomic write makes new
    files, so a rewrite changes at least the times."""
    root = Path(directory)
    found = []
    for path in root.rglob("*"):
        name = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in name.parts):
            stat = path.stat()
            found.append([name.as_posix(), stat.st_size, stat.st_mtime_ns])
    return sorted(found)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file of settings as a dict; a missing, unreadable or non-UTF-8 file, bad YAML or a
    non-mapping is one line."""
    import yaml

    text = read_input_text(path, "config file")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of settings")
    return data
