"""Atomic file and folder writes: a reader (another process, a resumed run, a crash survivor)
sees either the old content or the new, never half of it.

Everything is written to a hidden sibling first and then swapped in with `os.replace`, which is
atomic within one filesystem. The sibling's name carries the process and thread id, so two
writers of the same path never write into each other's temporary file.

Below them, the private scratch helpers: 0700 folders and 0600 files for copies of private data.
Imports no component.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _sibling(path: Path, kind: str) -> Path:
    # Hidden and unique per writer; `.NAME.KIND-PID-...` is also what `_sweep_stale` looks for.
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{threading.get_ident()}")


@contextmanager
def replacing_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s new content to; it replaces `path` when the block
    ends. If the block fails, the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # already gone after a successful replace


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with replacing_file(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Path, text: str) -> None:
    with replacing_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, data) -> None:
    # default=str: paths, datetimes and the like are written as text rather than failing the write.
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _sweep_stale(target: Path) -> None:
    """Remove temporary siblings of `target` left by writers that were killed (their pid is gone):
    a folder can be large (a converted model), and a crash skips `replacing_dir`'s cleanup."""
    for stale in target.parent.glob(f".{target.name}.*-*"):
        kind, _, owner = stale.name[len(target.name) + 2:].partition("-")
        pid = owner.split("-")[0]
        if kind not in ("tmp", "old") or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            pass  # alive but not ours to signal: still in use


@contextmanager
def replacing_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder to lay out `target`'s new content in; it replaces `target`
    when the block ends, so no half-written folder is ever seen under that name. If the block
    fails, the temporary folder is removed and `target` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(target)
    tmp, old = _sibling(target, "tmp"), _sibling(target, "old")
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():
            os.replace(target, old)  # os.replace cannot overwrite a non-empty folder: move it aside first
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def read_json(path: Path) -> dict:
    """The JSON object in `path`, or {} when it is missing or unreadable (a file a run may not
    have written yet)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def append_jsonl(path: Path, row: dict) -> None:
    """One JSON line at the end of an append-only file (timings.jsonl, an adapter's progress.jsonl)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of an append-only JSON-lines file (timings.jsonl, rewards.jsonl), [] when it
    is missing; a line cut by a kill, or anything but an object, is skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


# --- private scratch: folders 0700, files 0600 ----------------------------------------------------
# Scratch copies of private data (gold answers, an evaluator's working folder) must stay unreadable
# to other local users while they exist. The modes are given explicitly at creation, never left to
# the umask (022 makes folders 0755 and files 0644) and never set through os.umask, which is per
# process: one thread's 077 would leak into, or be undone by, another thread's writes.

PRIVATE_DIR_MODE, PRIVATE_FILE_MODE = 0o700, 0o600


@contextmanager
def private_scratch(prefix: str) -> Iterator[Path]:
    """A fresh 0700 temporary folder, removed with everything in it when the block ends."""
    scratch = Path(tempfile.mkdtemp(prefix=prefix))  # mkdtemp creates it 0700
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def make_private_dir(path: Path) -> Path:
    """Create `path` and its missing parents as 0700 folders (existing ones are left as they are)."""
    path = Path(path)
    missing = []
    folder = path
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR_MODE)
        except FileExistsError:
            pass  # made meanwhile by another writer
    return path


def _open_private(path: Path):
    """`path` opened for writing as a 0600 file: created so, or truncated and made so; a symlink
    in its place is refused (ELOOP), not followed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    return os.fdopen(fd, "wb")


def write_private_bytes(path: Path, data: bytes) -> None:
    with _open_private(path) as f:
        f.write(data)


def write_private_text(path: Path, text: str) -> None:
    write_private_bytes(path, text.encode("utf-8"))


def copy_private_file(src: Path, dest: Path) -> None:
    """Copy `src`'s content (not its mode) into a 0600 `dest`."""
    with open(src, "rb") as f, _open_private(dest) as out:
        shutil.copyfileobj(f, out)


def copy_private_tree(src: Path, dest: Path, leave_out: frozenset[str] = frozenset()) -> None:
    """Copy the regular files and folders under `src` into `dest` (created) as 0700 folders and
    0600 files; symbolic links are not copied, nor the entries of `src` itself named in `leave_out`."""
    make_private_dir(dest)
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        if entry.name in leave_out:
            continue
        if entry.is_dir(follow_symlinks=False):
            copy_private_tree(Path(entry.path), Path(dest) / entry.name)
        elif entry.is_file(follow_symlinks=False):
            copy_private_file(Path(entry.path), Path(dest) / entry.name)
