"""`sia tasks import-mlebench DIR`: a task from an MLE-bench prepared competition folder
(`public/train.csv`, `public/test.csv`, `public/sample_submission.csv`, optional
`public/description.md`; `private/test.csv` with the answers), graded by a small declared grader:
`DIR/grader.json` = {"metric": "accuracy", "id_column": ..., "label_column": ...}. Without it the
id and label columns are the sample submission's two columns and the metric is accuracy.

The result is a `csv-table` task: agents see every column but the label; items are aligned on
the id column (MLE-bench's graders sort both files by it). Only accuracy is implemented; a task
with another metric can bring its own evaluator (see tasks/evaluator.py).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from pathlib import Path

from sia.files import replacing_dir
from sia.tasks.base import TaskError
from sia.tasks.classification import REFERENCE_AGENT

METRICS = ("accuracy",)
NEEDED = ("public/train.csv", "public/test.csv", "public/sample_submission.csv", "private/test.csv")


def _header(data: bytes, name: str) -> list[str]:
    try:
        return next(csv.reader(io.StringIO(data.decode("utf-8"))))
    except (StopIteration, UnicodeDecodeError) as exc:
        raise TaskError(f"{name}: empty or not UTF-8 CSV ({exc})") from None


def import_mlebench_tree(files: dict[str, bytes], dest: Path, name: str, description: str, grader: dict | None) -> Path:
    """Lay out a task from the competition's files (relative name -> bytes)."""
    sample = _header(files["public/sample_submission.csv"], "public/sample_submission.csv")
    grader = grader or {"metric": "accuracy", "id_column": sample[0], "label_column": sample[-1]}
    if grader.get("metric") not in METRICS:
        raise TaskError(f"grader.json: metric {grader.get('metric')!r} is not implemented (only {', '.join(METRICS)}); "
                        "give the task its own evaluator script instead")
    id_col, label_col = grader["id_column"], grader["label_column"]
    for rel, cols in (("public/train.csv", (id_col, label_col)), ("public/test.csv", (id_col,)),
                      ("private/test.csv", (id_col, label_col))):
        missing = [c for c in cols if c not in _header(files[rel], rel)]
        if missing:
            raise TaskError(f"{rel}: no column {missing[0]!r} (grader.json names the id and label columns)")
    train = list(csv.DictReader(io.StringIO(files["public/train.csv"].decode("utf-8"))))
    classes = sorted({r[label_col] for r in train})
    with replacing_dir(dest) as tmp:
        (tmp / "data" / "public").mkdir(parents=True)
        (tmp / "data" / "private").mkdir()
        os.chmod(tmp / "data" / "private", 0o700)
        for rel, data in files.items():
            (tmp / "data" / rel).write_bytes(data)
        (tmp / "data" / "public" / "classes.json").write_text(json.dumps(classes, ensure_ascii=False), encoding="utf-8")
        (tmp / "reference").mkdir()
        shutil.copy(REFERENCE_AGENT, tmp / "reference" / "target_agent.py")
        (tmp / "task.md").write_text(description, encoding="utf-8")
        (tmp / "sia_task.json").write_text(json.dumps({
            "name": name, "kind": "csv-table", "metric": grader["metric"], "id_column": id_col,
            "label_column": label_col, "feedback_per_label": max(2, math.ceil(24 / len(classes))),
            "selection_per_label": max(3, math.ceil(36 / len(classes)))}, indent=1))
    return dest


def import_mlebench(folder: Path, dest: Path, name: str) -> Path:
    folder = Path(folder)
    missing = [rel for rel in NEEDED if not (folder / rel).is_file()]
    if missing:
        raise TaskError(f"{folder / missing[0]}: missing; an MLE-bench prepared folder has {', '.join(NEEDED)}")
    grader = None
    if (folder / "grader.json").exists():
        try:
            grader = json.loads((folder / "grader.json").read_text())
            grader["id_column"], grader["label_column"]
        except (ValueError, KeyError, TypeError) as exc:
            raise TaskError(f"{folder / 'grader.json'}: expected {{\"metric\", \"id_column\", \"label_column\"}} ({exc})") from None
    description = folder / "public" / "description.md"
    text = description.read_text(encoding="utf-8") if description.exists() else f"# {name}\n\nMLE-bench competition.\n"
    return import_mlebench_tree({rel: (folder / rel).read_bytes() for rel in NEEDED}, dest, name, text, grader)
