"""A task folder and its contract with the loop.

Layout (SIA's, plus our `sia_task.json`): `task.md`, `data/public/` (what agents may read),
`data/private/` (labels; never reachable by agents), `reference/target_agent.py`.
An agent runs as `python target_agent.py --dataset_dir D --working_dir W` and writes
`W/submission.csv` (`id,label`). The loop hands it a *view* of the public data: `test.csv`
with opaque ids for the items being predicted (so it cannot tell which split an item is in)
and `train.csv` holding the training pool minus every feedback/selection/predicted item.

Splits: `feedback` and `selection` are carved deterministically (per label) from the training
data; `test` is the private test split; `pool` is the rest of training, which agents may read.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SPLITS = ("feedback", "selection", "test")


class TaskError(ValueError):
    """A malformed task folder; the message names the file and the fix."""


class TaskSpec(BaseModel):
    """Our metadata file `sia_task.json`; every field has a default, so a task may omit it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Task name.")
    kind: Literal["csv-classification"] = "csv-classification"
    metric: str = Field("accuracy", description="Name of the reported metric.")
    direction: Literal["max", "min"] = Field("max", description="Whether higher is better.")
    id_column: str = "id"
    text_column: str = "text"
    label_column: str = "label"
    train_file: str = Field("data/public/train.csv", description="Labelled training data (public).")
    test_file: str = Field("data/public/test.csv", description="Test inputs without labels (public).")
    test_labels_file: str = Field("data/private/test.csv", description="Test labels (private).")
    classes_file: str = Field("data/public/classes.json", description="JSON list of allowed labels.")
    reference_agent: str = Field("reference/target_agent.py", description="The reference agent.")
    submission: str = Field("submission.csv", description="What the agent writes into its working dir.")
    feedback_per_label: int = Field(2, ge=1, description="Feedback items per label, drawn from training data.")
    selection_per_label: int = Field(3, ge=1, description="Selection items per label, drawn from training data.")
    split_seed: int = Field(0, description="Seed of the split draw.")


class Task:
    def __init__(self, root: Path, spec: TaskSpec):
        self.root, self.spec = root, spec
        self.description = (root / "task.md").read_text(encoding="utf-8")
        self.classes: list[str] = json.loads((root / spec.classes_file).read_text(encoding="utf-8"))

    @classmethod
    def load(cls, root: Path) -> "Task":
        root = Path(root)
        if not root.is_dir():
            raise TaskError(f"{root}: task directory not found")
        meta = root / "sia_task.json"
        try:
            spec = TaskSpec.model_validate_json(meta.read_text()) if meta.exists() else TaskSpec(name=root.name)
        except (ValidationError, ValueError) as exc:
            raise TaskError(f"{meta}: invalid task metadata ({exc}); fix the file or delete it to use the defaults")
        need = {"task.md": "write a task description", spec.train_file: "add labelled training data",
                spec.test_file: "add the test inputs", spec.test_labels_file: "add the private test labels",
                spec.classes_file: "add a JSON list of allowed labels", spec.reference_agent: "add a reference agent"}
        for rel, fix in need.items():
            if not (root / rel).exists():
                raise TaskError(f"{root / rel}: missing; {fix}")
        return cls(root, spec)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def reference_agent(self) -> Path:
        return self.root / self.spec.reference_agent

    def _read(self, rel: str) -> list[dict]:
        with open(self.root / rel, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        s = self.spec
        for i, row in enumerate(rows):
            if s.id_column not in row:
                raise TaskError(f"{self.root / rel}: row {i + 2} has no '{s.id_column}' column")
        return rows

    def splits(self, limit: int | None = None) -> dict[str, list[dict]]:
        """Rows `{id, text, label}` of feedback, selection, test and pool; deterministic."""
        s = self.spec
        train = [{"id": r[s.id_column], "text": r[s.text_column], "label": r[s.label_column]}
                 for r in self._read(s.train_file)]
        labels = {r[s.id_column]: r[s.label_column] for r in self._read(s.test_labels_file)}
        test = [{"id": r[s.id_column], "text": r[s.text_column], "label": labels.get(r[s.id_column])}
                for r in self._read(s.test_file)]
        by_label: dict[str, list[dict]] = defaultdict(list)
        for row in train:
            by_label[row["label"]].append(row)
        rng = random.Random(s.split_seed)
        out: dict[str, list[dict]] = {"feedback": [], "selection": [], "pool": []}
        for label in sorted(by_label):
            rows = by_label[label][:]
            rng.shuffle(rows)
            out["feedback"] += rows[: s.feedback_per_label]
            out["selection"] += rows[s.feedback_per_label: s.feedback_per_label + s.selection_per_label]
            out["pool"] += rows[s.feedback_per_label + s.selection_per_label:]
        out["test"] = test
        for name in ("feedback", "selection", "test"):
            rng.shuffle(out[name])
            if limit:
                out[name] = out[name][:limit]
        return out

    def write_view(self, dest: Path, predict: dict[str, list[dict]], pool: list[dict], salt: str,
                   prefix: str = "") -> dict[str, tuple[str, str]]:
        """Write the agent's dataset view into `dest`; return tag -> (split, item id).
        Tags are `prefix` + a number in an order hashed from `salt`, so they reveal no split."""
        dest.mkdir(parents=True, exist_ok=True)
        items = [(split, row) for split, rows in predict.items() for row in rows]
        tagged = sorted(items, key=lambda sr: hashlib.sha256(f"{salt}:{sr[0]}:{sr[1]['id']}".encode()).hexdigest())
        tags = {f"{prefix}q{i:05d}": (split, row["id"]) for i, (split, row) in enumerate(tagged)}
        hidden = {row["id"] for _, row in items}
        with open(dest / "test.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "text"])
            for tag, (_, row) in zip(tags, tagged):
                w.writerow([tag, row["text"]])
        with open(dest / "train.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "text", "label"])
            for row in pool:
                if row["id"] not in hidden:
                    w.writerow([row["id"], row["text"], row["label"]])
        shutil.copy(self.root / self.spec.classes_file, dest / "classes.json")
        shutil.copy(self.root / "task.md", dest / "task.md")
        return tags

    def read_predictions(self, workdir: Path) -> dict[str, str]:
        """The agent's submission as tag -> label; raises TaskError naming what is wrong."""
        path = workdir / self.spec.submission
        if not path.exists():
            raise TaskError(f"the agent wrote no {self.spec.submission} in its working directory")
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            rows = list(csv.DictReader(f))
        if rows and ("id" not in rows[0] or "label" not in rows[0]):
            raise TaskError(f"{self.spec.submission} must have columns id,label; got {list(rows[0])}")
        return {str(r["id"]): str(r["label"] or "") for r in rows}

    def score_item(self, prediction: str | None, gold: str | None) -> float:
        """Top-1 accuracy: a missing or out-of-list label is wrong."""
        return float(prediction is not None and prediction in self.classes and prediction == gold)
