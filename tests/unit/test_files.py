"""sia.files: atomic writes leave either the old content or the new, and no temporary siblings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sia.files import replacing_dir, replacing_file, write_json_atomic, write_text_atomic


def test_writes_create_parents_and_replace(tmp_path):
    path = tmp_path / "a" / "b" / "x.json"
    write_json_atomic(path, {"path": tmp_path, "text": "罪名"})  # default=str, ensure_ascii=False
    assert json.loads(path.read_text(encoding="utf-8")) == {"path": str(tmp_path), "text": "罪名"}
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and os.listdir(path.parent) == ["x.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "x.json"
    write_text_atomic(path, "old")
    with pytest.raises(RuntimeError), replacing_file(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed while writing")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["x.json"]


def test_a_folder_is_swapped_whole_or_not_at_all(tmp_path):
    target = tmp_path / "adapter"
    for content in ("first", "second"):
        with replacing_dir(target) as tmp:
            (tmp / "weights").write_text(content)
    assert (target / "weights").read_text() == "second"
    with pytest.raises(RuntimeError), replacing_dir(target) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed")
    assert (target / "weights").read_text() == "second" and os.listdir(tmp_path) == ["adapter"]


def test_leftovers_of_dead_writers_are_swept_but_not_those_of_live_ones(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (tmp_path / f".model.tmp-{dead}-1").mkdir()
    (tmp_path / f".model.tmp-{os.getppid()}-1").mkdir()  # a writer that is still running
    with replacing_dir(tmp_path / "model") as tmp:
        (tmp / "config.json").write_text("{}")
    assert sorted(os.listdir(tmp_path)) == sorted(["model", f".model.tmp-{os.getppid()}-1"])


def test_private_helpers_make_0700_folders_and_0600_files_whatever_the_umask(tmp_path):
    from sia.files import copy_private_file, copy_private_tree, make_private_dir, write_private_bytes

    old = os.umask(0o022)
    try:
        folder = make_private_dir(tmp_path / "a" / "b")
        (tmp_path / "loose.txt").write_text("gold")  # 0644 under this umask
        write_private_bytes(tmp_path / "loose.txt", b"new")  # an existing file is made 0600 too
        copy_private_file(tmp_path / "loose.txt", folder / "copy.txt")
        os.symlink(tmp_path / "loose.txt", folder / "link.txt")
        copy_private_tree(tmp_path / "a", tmp_path / "tree", leave_out=frozenset({"skip"}))
        with pytest.raises(OSError):
            write_private_bytes(folder / "link.txt", b"x")  # a link is refused, not followed
    finally:
        os.umask(old)
    modes = {p.relative_to(tmp_path).as_posix(): oct(p.lstat().st_mode & 0o777)
             for p in tmp_path.rglob("*") if not p.is_symlink()}
    assert modes == {"a": "0o700", "a/b": "0o700", "a/b/copy.txt": "0o600", "loose.txt": "0o600",
                     "tree": "0o700", "tree/b": "0o700", "tree/b/copy.txt": "0o600"}
    assert (tmp_path / "loose.txt").read_bytes() == b"new"
