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
