"""A task folder in our layout, scored per item: `CsvTask`, one kind of `tasks.base.Task`.

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
import io
import json
import random
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sia.sandbox.files import UnsafeOutput, read_child_file
from sia.records import ItemResult
from sia.tasks.base import Guard, ItemOutcome, Row, Tags, TaskError
from sia.tasks.evaluator import run_evaluator

MACRO_RECALL = Guard("macro_recall", "max", why="the mean over gold labels of each label's mean score; a gain "
                                                "bought by giving up a rare label lowers it")

class TaskSpec(BaseModel):
    """Our metadata file `sia_task.json`; every field has a default, so a task may omit it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Task name.")
    kind: Literal["csv-classification", "csv-table"] = Field(
        "csv-classification", description="csv-classification: one text column per row; csv-table: every column "
                                          "but the label is a feature (agents see them all, e.g. MLE-bench tables).")
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
    evaluator: str | None = Field(None, description="The task's own evaluator script (tasks/evaluator.py has its contract); "
                                                    "None scores top-1 accuracy against the allowed labels.")
    evaluator_timeout_s: float = Field(120, gt=0, description="Wall-clock limit of one evaluator run.")
    agent_env: list[str] = Field(default_factory=list, description="Environment variables passed from SIA's "
                                 "environment to the agent (task settings, never keys: names ending in _KEY, _TOKEN, "
                                 "_SECRET or _PASSWORD are refused).")
    feedback_per_label: int = Field(2, ge=1, description="Feedback items per label, drawn from training data.")
    selection_per_label: int = Field(3, ge=1, description="Selection items per label, drawn from training data.")
    split_seed: int = Field(0, description="Seed of the split draw.")
    splits_file: str | None = Field(None, description='JSON {"feedback": [ids], "selection": [ids]} of training ids; '
                                                      "overrides the per-label draw.")
    transfer_tasks: list[str] = Field(default_factory=list, description="Related tasks (built-in names or task "
                                      "folders, relative to this one) that `sia transfer RUN` scores a run's incumbents "
                                      "on by default: tasks a run on this one never trains or selects on.")


class CsvTask:
    """A task folder in our layout (the `tasks.base.Task` protocol): CSV rows scored per item,
    by top-1 accuracy against the allowed labels or by the task's own evaluator script."""

    def __init__(self, root: Path, spec: TaskSpec):
        self.root, self.spec = root, spec
        self._splits: dict[int | None, dict[str, list[Row]]] = {}
        self.description = (root / "task.md").read_text(encoding="utf-8")
        self.classes: list[str] = json.loads((root / spec.classes_file).read_text(encoding="utf-8"))

    @classmethod
    def load(cls, root: Path) -> "CsvTask":
        root = Path(root)
        if not root.is_dir():
            raise TaskError(f"{root}: task directory not found")
        meta = root / "sia_task.json"
        try:
            spec = TaskSpec.model_validate_json(meta.read_text()) if meta.exists() else TaskSpec(name=root.name)
        except (ValidationError, ValueError) as exc:
            raise TaskError(f"{meta}: invalid task metadata ({exc}); fix the file or delete it to use the defaults")
        if spec.direction != "max":
            raise TaskError(f"{meta}: direction '{spec.direction}': the loop maximises its metric; have the evaluator "
                            "report a score where higher is better (e.g. the negated loss) and set direction to max")
        if not (root / "data" / "private").is_dir() and spec.test_labels_file.startswith("data/private/"):
            raise TaskError(f"{root / 'data' / 'private'}: missing; the private test labels go there "
                            f"({spec.test_labels_file}), where no agent can read them")
        need = {"task.md": "write a task description", spec.train_file: "add labelled training data",
                spec.test_file: "add the test inputs", spec.test_labels_file: "add the private test labels",
                spec.classes_file: "add a JSON list of allowed labels", spec.reference_agent: "add a reference agent"}
        if secret := [v for v in spec.agent_env if v.upper().endswith(("_KEY", "_TOKEN", "_SECRET", "_PASSWORD"))]:
            raise TaskError(f"{meta}: agent_env names {secret[0]}, which looks like a secret; agents never get secrets")
        if spec.evaluator:
            need[spec.evaluator] = "add the evaluator script, or remove 'evaluator' from sia_task.json"
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

    @property
    def agent_env(self) -> list[str]:
        return self.spec.agent_env

    @property
    def submission(self) -> str:
        return self.spec.submission

    @property
    def transfer_tasks(self) -> tuple[str, ...]:
        """The declared transfer sets (sia_task.json's `transfer_tasks`; see `sia transfer`)."""
        return tuple(self.spec.transfer_tasks)

    def protected_files(self) -> list[Path]:
        """What no agent may change: the description, our metadata, the evaluator and the private data."""
        s = self.spec
        files = [self.root / "task.md", self.root / "sia_task.json", self.root / s.test_labels_file]
        if s.evaluator:
            files.append(self.root / s.evaluator)
        private = self.root / "data" / "private"
        if private.is_dir():
            files += sorted(p for p in private.rglob("*") if p.is_file())
        return sorted({f for f in files if f.exists()})

    def fingerprint(self) -> dict[str, str]:
        """SHA-256 of every protected file, keyed by its path relative to the task folder."""
        return {str(p.relative_to(self.root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in self.protected_files()}

    def _read(self, rel: str) -> list[dict]:
        with open(self.root / rel, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        s = self.spec
        for i, row in enumerate(rows):
            if s.id_column not in row:
                raise TaskError(f"{self.root / rel}: row {i + 2} has no '{s.id_column}' column")
        return rows

    @property
    def submission_columns(self) -> tuple[str, str]:
        """Header of the agent's submission: `id,label`, or a table task's own id and label columns."""
        s = self.spec
        return ("id", "label") if s.kind == "csv-classification" else (s.id_column, s.label_column)

    def _item(self, row: dict, label: str | None) -> dict:
        s = self.spec
        if s.kind == "csv-table":
            fields = {k: v for k, v in row.items() if k != s.label_column}
            return {"id": row[s.id_column], "label": label, "fields": fields,
                    "text": "; ".join(f"{k}={v}" for k, v in fields.items() if k != s.id_column)}
        if s.text_column not in row:
            raise TaskError(f"{self.root}: rows have no '{s.text_column}' column; set text_column in sia_task.json")
        return {"id": row[s.id_column], "text": row[s.text_column], "label": label}

    def splits(self, limit: int | None = None) -> dict[str, list[Row]]:
        """Rows `{id, text, label}` (tables: plus `fields`) of feedback, selection, test and pool;
        deterministic, read and drawn once per limit (callers get their own copy)."""
        if limit not in self._splits:
            self._splits[limit] = self._draw_splits(limit)
        return {name: list(rows) for name, rows in self._splits[limit].items()}

    def _draw_splits(self, limit: int | None) -> dict[str, list[Row]]:
        s = self.spec
        train = [self._item(r, r.get(s.label_column)) for r in self._read(s.train_file)]
        labels = {r[s.id_column]: r.get(s.label_column) for r in self._read(s.test_labels_file)}
        test = [self._item(r, labels.get(r[s.id_column])) for r in self._read(s.test_file)]
        by_label: dict[str, list[dict]] = defaultdict(list)
        for row in train:
            by_label[row["label"]].append(row)
        rng = random.Random(s.split_seed)
        out: dict[str, list[dict]] = {"feedback": [], "selection": [], "pool": []}
        if s.splits_file:
            out.update(self._declared_splits(train))
            by_label = {}
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
        rng.shuffle(out["pool"])  # any slice of it (the rollouts) mixes labels
        return out

    def _declared_splits(self, train: list[dict]) -> dict[str, list[dict]]:
        path = self.root / self.spec.splits_file
        try:
            declared = json.loads(path.read_text(encoding="utf-8"))
            ids = {name: [str(i) for i in declared[name]] for name in ("feedback", "selection")}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TaskError(f"{path}: expected a JSON object with 'feedback' and 'selection' id lists ({exc})") from None
        by_id = {r["id"]: r for r in train}
        unknown = [i for name in ids for i in ids[name] if i not in by_id]
        if unknown or set(ids["feedback"]) & set(ids["selection"]):
            raise TaskError(f"{path}: ids must be distinct training ids; unknown: {unknown[:5]}, "
                            f"in both: {sorted(set(ids['feedback']) & set(ids['selection']))[:5]}")
        taken = set(ids["feedback"]) | set(ids["selection"])
        return {"feedback": [by_id[i] for i in ids["feedback"]], "selection": [by_id[i] for i in ids["selection"]],
                "pool": [r for r in train if r["id"] not in taken]}

    def write_view(self, dest: Path, predict: dict[str, list[dict]], pool: list[dict], salt: str,
                   prefix: str = "") -> dict[str, tuple[str, str]]:
        """Write the agent's dataset view into `dest`; return tag -> (split, item id).
        Tags are `prefix` + a number in an order hashed from `salt`, so they reveal no split."""
        dest.mkdir(parents=True, exist_ok=True)
        items = [(split, row) for split, rows in predict.items() for row in rows]
        tagged = sorted(items, key=lambda sr: hashlib.sha256(f"{salt}:{sr[0]}:{sr[1]['id']}".encode()).hexdigest())
        tags = {f"{prefix}q{i:05d}": (split, row["id"]) for i, (split, row) in enumerate(tagged)}
        hidden = {row["id"] for _, row in items}
        table = self.spec.kind == "csv-table"
        features = list((pool or [r for _, r in items])[0]["fields"]) if table and (pool or items) else []
        id_col, label_col = self.submission_columns
        with open(dest / "test.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(features if table else ["id", "text"])
            for tag, (_, row) in zip(tags, tagged):
                w.writerow([tag if c == id_col else row["fields"].get(c) for c in features] if table else [tag, row["text"]])
        with open(dest / "train.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(features + [label_col] if table else ["id", "text", "label"])
            for row in pool:
                if row["id"] not in hidden:
                    w.writerow([row["fields"].get(c) for c in features] + [row["label"]] if table
                               else [row["id"], row["text"], row["label"]])
        (dest / "sample_submission.csv").write_text(f"{id_col},{label_col}\n", encoding="utf-8")
        shutil.copy(self.root / self.spec.classes_file, dest / "classes.json")
        shutil.copy(self.root / "task.md", dest / "task.md")
        return tags

    def read_predictions(self, workdir: Path) -> dict[str, str]:
        """The agent's submission as tag -> label; raises TaskError naming what is wrong.
        The agent controls `workdir`: links, FIFOs, folders and giant files are refused."""
        try:
            data = read_child_file(workdir, self.spec.submission)
        except UnsafeOutput as exc:
            raise TaskError(str(exc)) from None
        if data is None:
            raise TaskError(f"the agent wrote no {self.spec.submission} in its working directory")
        try:
            rows = list(csv.DictReader(io.StringIO(data.decode("utf-8", errors="replace"), newline="")))
        except csv.Error as exc:
            raise TaskError(f"{self.spec.submission} is not valid CSV ({exc})") from None
        id_col, label_col = self.submission_columns
        if rows and (id_col not in rows[0] or label_col not in rows[0]):
            raise TaskError(f"{self.spec.submission} must have columns {id_col},{label_col}; got {list(rows[0])[:5]}")
        return {str(r[id_col]): str(r[label_col] or "")[:1000] for r in rows}

    def score_item(self, prediction: str | None, gold: str | None) -> float:
        """Top-1 accuracy: a missing or out-of-list label is wrong."""
        return float(prediction is not None and prediction in self.classes and prediction == gold)

    def score_items(self, predictions: dict[str, str | None], gold: dict[str, str | None], *,
                    sandbox, limits, python: str) -> dict[str, float]:
        """Item id -> score for one split: the task's evaluator (its own process) or top-1 accuracy."""
        if self.spec.evaluator:
            return run_evaluator(self.root / self.spec.evaluator, self.spec.evaluator_timeout_s, sandbox, limits,
                                 python, predictions, gold)
        return {item: self.score_item(predictions.get(item), g) for item, g in gold.items()}

    @property
    def guards(self) -> tuple[Guard, ...]:
        """Macro recall beside the metric, for a task with a class list whose score rises."""
        return (MACRO_RECALL,) if self.classes and self.spec.direction == "max" else ()

    def guard_values(self, items: list[ItemResult]) -> dict[str, dict[str, float]]:
        """macro_recall per item of one split: its score times N / (L * n_gold), so that the mean over
        the split's N items (L distinct gold answers, n_gold items with this one's) is the mean over
        gold answers of their items' mean score: macro recall for 0/1 scores. Computed from the stored
        gold answers, so a run scored before guards existed is checked too."""
        labelled = [i for i in items if i.gold is not None]
        counts = Counter(i.gold for i in labelled)
        n, labels = len(labelled), len(counts)
        return {"macro_recall": {i.item_id: i.score * n / (labels * counts[i.gold]) for i in labelled}}

    def score_output(self, out_dir: Path, tags: Tags, gold: dict[tuple[str, str], str | None], *, sandbox,
                     limits, python: str) -> tuple[dict[tuple[str, str], ItemOutcome], str | None]:
        """The agent's submission scored split by split (see `tasks.base.Task.score_output`)."""
        try:
            predictions, problem = self.read_predictions(out_dir), None
        except TaskError as exc:
            predictions, problem = {}, str(exc)
        by_key = {key: predictions.get(tag) for tag, key in tags.items()}
        outcomes = {}
        for split in sorted({s for s, _ in tags.values()}):
            ids = [i for s, i in tags.values() if s == split]
            scores = self.score_items({i: by_key[(split, i)] for i in ids}, {i: gold[(split, i)] for i in ids},
                                      sandbox=sandbox, limits=limits, python=python)
            outcomes.update({(split, i): ItemOutcome(by_key[(split, i)], scores[i], None if by_key[(split, i)] is not None
                                                     else "no prediction for this item") for i in ids})
        return outcomes, problem
