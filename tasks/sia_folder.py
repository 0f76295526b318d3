"""An unmodified SIA task folder, run by our loop.

SIA's layout: `data/public/` (`task.md`, `evaluate.py`, the data agents read), `data/private/`
(the gold answers) and `reference/` (the reference agent, `*target_agent.py`). SIA runs
`python target_agent.py --dataset_dir data/public --working_dir GEN`, then
`python data/public/evaluate.py --gen-dir GEN`, which finds the agent's output in GEN, reads the
gold answers beside itself (`../private`) and writes `GEN/results.json`.

SIA scores all private items at once; we need three disjoint tiers. The items are the ids of the
*item table*: the first file of `data/private` (by name) that is a CSV (ids in its first column),
a JSON list of objects with an "id", or a JSON object keyed by id. A seeded hash sends each id to
feedback, selection or test (fractions in an optional `sia_task.json`, default 20/20/60). Every
evaluation works on a copy of the task folder in which each file of `data/public` and
`data/private` that is mostly item rows keeps only the rows of the items at hand: the agent sees
only those inputs (unless `restrict_public_inputs` is false) and the unmodified `evaluate.py`
scores only that tier.

A tier's score is results.json's metric (`accuracy` by default, else its first top-level number),
one reward for the whole solution, given to every item of the tier; when results.json has
`"items": [{"id": ..., "score": number | "correct": bool}, ...]` those are the per-item outcomes
(an item's own value of the metric, `items[].METRIC`, is used before its `score`). Guard metrics
declared in `sia_task.json` are read the same way: `items[].NAME`, else the tier's `NAME`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sia.files import (copy_private_file, copy_private_tree, make_private_dir, private_scratch,
                       write_private_bytes)
from sia.sandbox.files import UnsafeOutput, copy_child_tree, read_child_file
from sia.records import ItemResult
from sia.tasks.base import Guard, ItemOutcome, Tags, TaskError, reported_guard_values
from sia.tasks.csv_task import CsvTask
from sia.tasks.evaluator import EvaluatorError, finite_number, run_timed, timed_out_error


class SIAFolderSpec(BaseModel):
    """Optional `sia_task.json` beside an SIA folder's `data/` (kind "sia-folder")."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Task name.")
    kind: Literal["sia-folder"] = "sia-folder"
    metric: str = Field("accuracy", description="results.json key of the score (higher is better); when absent "
                                                "the first top-level number is used.")
    direction: Literal["max"] = Field("max", description="The loop maximises; report a score where higher is better.")
    evaluator: str = Field("data/public/evaluate.py", description="SIA's evaluator, run as `evaluate.py --gen-dir D`.")
    evaluator_timeout_s: float = Field(300, gt=0, description="Wall-clock limit of one evaluator run.")
    reference_agent: str | None = Field(None, description="The reference agent; default: the one *target_agent.py "
                                                          "in reference/.")
    item_table: str | None = Field(None, description="The private file whose rows are the items; default: the "
                                                     "first one of data/private that is a table.")
    feedback_fraction: float = Field(0.2, gt=0, lt=1, description="Share of the items in the feedback tier.")
    selection_fraction: float = Field(0.2, gt=0, lt=1, description="Share of the items in the selection tier.")
    split_seed: int = Field(0, description="Seed of the tier hash.")
    restrict_public_inputs: bool = Field(True, description="Cut the agent's public item tables to the items at hand; "
                                         "False when items belong together (e.g. the cells of one dataset): the agent "
                                         "then sees every item's public inputs, and only the scoring is cut to a tier.")
    agent_env: list[str] = Field(default_factory=list, description="Environment variables passed to the agent.")
    submission: str = Field("submission.csv", description="The output file kept in the generation's logs.")
    max_output_bytes: int = Field(512_000_000, gt=0, description="Cap on what the agent leaves in its working dir "
                                  "(all files together; each evaluation copies it once per tier).")
    guards: list[Guard] = Field(default_factory=list, description="Guard metrics (tasks.base.Guard: name, direction, "
                                "bound, tolerance, why): further numbers of results.json, per item (`items[].NAME`) or "
                                "per tier (`NAME`), that a candidate's gain must not worsen (keep-best blocks it if one does).")
    reward_function: str | None = Field(None, description="A function of the reference agent that a target-model "
                                        "completion may replace (e.g. `denoise`): then a single completion has a reward "
                                        "(GRPO): the reference agent with that function replaced, run on the feedback "
                                        "tier in the sandbox and scored by the evaluator. None: no reward path.")
    transfer_tasks: list[str] = Field(default_factory=list, description="Related tasks (built-in names or task "
                                      "folders, relative to this one) that `sia transfer RUN` scores a run's incumbents "
                                      "on by default.")


def is_sia_folder(root: Path) -> bool:
    return (root / "data" / "public" / "task.md").is_file() and not (root / "task.md").exists()


def _read_table(path: Path) -> tuple[str, list | dict, list[str]] | None:
    """(kind, parsed, ids) of a CSV with a header / JSON list of {"id"} / JSON object; else None."""
    if path.suffix.lower() == ".csv":
        try:
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
        except (csv.Error, UnicodeDecodeError):
            return None
        return ("csv", rows, [r[0] for r in rows[1:] if r]) if len(rows) > 1 else None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            return None
        if isinstance(data, list) and data and all(isinstance(r, dict) and "id" in r for r in data):
            return "json-list", data, [str(r["id"]) for r in data]
        if isinstance(data, dict) and data:
            return "json-object", data, [str(k) for k in data]
    return None


def restrict_copy(src: Path, dest: Path, all_ids: set[str], keep: set[str], private: bool = False) -> None:
    """Copy `src` to `dest`; a table at least half made of item rows keeps only the rows in `keep`.
    `private`: `dest` is 0600 (see `copy_restricted`)."""
    table = _read_table(src) if src.suffix.lower() in (".csv", ".json") else None
    if table is None or sum(i in all_ids for i in table[2]) * 2 < len(table[2]):
        copy_private_file(src, dest) if private else shutil.copy(src, dest)
        return
    kind, data, _ = table
    if kind == "csv":
        text = io.StringIO()
        csv.writer(text).writerows([data[0]] + [r for r in data[1:] if r and r[0] in keep])
        content = text.getvalue().encode("utf-8")
    else:
        kept = ([r for r in data if str(r["id"]) in keep] if kind == "json-list"
                else {k: v for k, v in data.items() if str(k) in keep})
        content = json.dumps(kept, ensure_ascii=False).encode("utf-8")
    write_private_bytes(dest, content) if private else dest.write_bytes(content)


def copy_restricted(src_dir: Path, dest_dir: Path, all_ids: set[str], keep: set[str], private: bool = False) -> None:
    """`restrict_copy` of every file under `src_dir` into `dest_dir`. `private`: 0700 folders and
    0600 files, for the evaluator's copy of the task (the gold answers); without it the usual
    modes, for the agent's view of the public data, which the sandbox shares with the agent."""
    mkdir = make_private_dir if private else (lambda folder: folder.mkdir(parents=True, exist_ok=True))
    mkdir(dest_dir)
    for path in sorted(src_dir.rglob("*")):
        target = dest_dir / path.relative_to(src_dir)
        if path.is_dir():
            mkdir(target)
        elif path.is_file():
            mkdir(target.parent)
            restrict_copy(path, target, all_ids, keep, private)


class SIAFolderTask(CsvTask):
    """An unmodified SIA task folder (the `tasks.base.Task` protocol), scored per tier by its evaluate.py."""

    per_item_calls = False  # the agent's output is scored per tier, so its model calls belong to the run

    def __init__(self, root: Path, spec: SIAFolderSpec, item_table: Path, item_ids: list[str], reference: Path):
        self.root, self.spec, self.item_table, self.item_ids, self._reference = root, spec, item_table, item_ids, reference
        self._splits = {}
        self.description = (root / "data" / "public" / "task.md").read_text(encoding="utf-8")
        classes = root / "data" / "public" / "classes.json"
        self.classes: list[str] = json.loads(classes.read_text(encoding="utf-8")) if classes.is_file() else []

    @classmethod
    def load(cls, root: Path) -> "SIAFolderTask":
        root = Path(root)
        meta = root / "sia_task.json"
        try:
            spec = SIAFolderSpec.model_validate_json(meta.read_text()) if meta.exists() else SIAFolderSpec(name=root.name)
        except (ValidationError, ValueError) as exc:
            raise TaskError(f"{meta}: invalid metadata for an SIA task folder ({exc}); fix it or delete it") from None
        if spec.feedback_fraction + spec.selection_fraction >= 1:
            raise TaskError(f"{meta}: feedback_fraction + selection_fraction must leave items for the test tier")
        private = root / "data" / "private"
        for path, fix in ((root / spec.evaluator, "SIA's evaluator goes there (run as `evaluate.py --gen-dir DIR`)"),
                          (private, "the gold answers go there, where no agent can read them")):
            if not path.exists():
                raise TaskError(f"{path}: missing; {fix}")
        agents = ([root / spec.reference_agent] if spec.reference_agent
                  else sorted((root / "reference").glob("*target_agent.py")))
        if len(agents) != 1 or not agents[0].is_file():
            raise TaskError(f"{root / 'reference'}: expected one reference agent (*target_agent.py), found "
                            f"{[a.name for a in agents]}; set reference_agent in sia_task.json")
        if spec.item_table and not (root / spec.item_table).is_file():
            raise TaskError(f"{root / spec.item_table}: missing; item_table in sia_task.json names the private "
                            "file whose rows are the items")
        candidates = ([root / spec.item_table] if spec.item_table
                      else (p for p in sorted(private.rglob("*")) if p.is_file()))
        found = next(((p, table) for p in candidates if (table := _read_table(p)) is not None), None)
        if found is None:
            raise TaskError(f"{private}: no item table (a CSV whose first column is the item id, a JSON list of "
                            "objects with an 'id', or a JSON object keyed by id); set item_table in sia_task.json")
        item_table, ids = found[0], found[1][2]
        if len(set(ids)) < 3 or len(set(ids)) != len(ids):
            raise TaskError(f"{item_table}: needs at least 3 distinct item ids (one per tier), without repeats")
        return cls(root, spec, item_table, ids, agents[0])

    @property
    def reference_agent(self) -> Path:
        return self._reference

    @property
    def guards(self) -> tuple[Guard, ...]:
        """The guards `sia_task.json` declares (their values come from each item's `metrics`)."""
        return tuple(self.spec.guards)

    def guard_values(self, items: list[ItemResult]) -> dict[str, dict[str, float]]:
        """What the evaluator reported per item (not CsvTask's macro recall: the gold stays private)."""
        return reported_guard_values(self.guards, items)

    @property
    def submission_columns(self) -> tuple[str, str]:
        return ("id", "label")

    def protected_files(self) -> list[Path]:
        files = [self.root / self.spec.evaluator, self.root / "data" / "public" / "task.md", self.root / "sia_task.json"]
        files += [p for p in (self.root / "data" / "private").rglob("*") if p.is_file()]
        return sorted({f for f in files if f.exists()})

    def _draw_splits(self, limit: int | None) -> dict[str, list[dict]]:
        """Items `{id, text: "", label: None}` per tier (the gold stays with evaluate.py); no pool."""
        s = self.spec
        order = sorted(self.item_ids, key=lambda i: hashlib.sha256(f"{s.split_seed}:{i}".encode()).hexdigest())
        n_fb = max(1, round(len(order) * s.feedback_fraction))
        n_sel = max(1, round(len(order) * s.selection_fraction))
        tiers = {"feedback": order[:n_fb], "selection": order[n_fb:n_fb + n_sel], "test": order[n_fb + n_sel:]}
        out = {name: [{"id": i, "text": "", "label": None} for i in ids[:limit]] for name, ids in tiers.items()}
        out["pool"] = []
        return out

    def write_view(self, dest: Path, predict: dict[str, list[dict]], pool: list[dict], salt: str,
                   prefix: str = "") -> dict[str, tuple[str, str]]:
        """`data/public` with the item tables cut to the items at hand; tags are the real ids."""
        keep = {row["id"] for rows in predict.values() for row in rows}
        if self.spec.restrict_public_inputs:
            copy_restricted(self.root / "data" / "public", dest, set(self.item_ids), keep)
        else:
            shutil.copytree(self.root / "data" / "public", dest)
        return {row["id"]: (split, row["id"]) for split, rows in predict.items() for row in rows}

    def score_output(self, out_dir: Path, tags: Tags, gold: dict[tuple[str, str], str | None], *, sandbox, limits,
                     python: str) -> tuple[dict[tuple[str, str], ItemOutcome], str | None]:
        """(outcomes, problem) as `tasks.base.Task.score_output`: evaluate.py once per tier, on a
        copy of the agent's output and of the task cut to that tier (`gold` is unused: the gold
        answers stay in the task's own private folder)."""
        with private_scratch("sia-eval-") as scratch:
            outputs = scratch / "outputs"
            try:
                copy_child_tree(out_dir, outputs, max_bytes=self.spec.max_output_bytes)
                left = outputs.is_dir() and any(outputs.iterdir())
                problem = None if left else "the agent left nothing in its working directory"
            except UnsafeOutput as exc:
                problem = str(exc)
            result = {}
            for split in sorted({s for s, _ in tags.values()}):
                ids = [i for s, i in tags.values() if s == split]
                result.update(self._score_tier(split, ids, outputs, problem, scratch / split, sandbox, limits, python))
            return result, problem

    def completion_reward(self, completion: str, item_id: str | None, *, sandbox, limits, python: str) -> float:
        """`tasks.base.RewardedTask`: the reference agent with `reward_function` replaced by the one
        in `completion`, run in the sandbox on the feedback tier's view, scored by the evaluator (with
        its own guards against gamed outputs); the mean over the feedback items (or `item_id`'s
        score). No such function in the completion, a crash, a rejected output or one past a guard's
        bound (sia_task.json's `guards`, as keep-best would block it): 0."""
        name = self.spec.reward_function
        if name is None:
            raise TaskError(f"{self.root / 'sia_task.json'}: no reward_function, so single completions cannot be "
                            "scored; set it to the reference agent's function a completion may replace, or use SFT")
        feedback = self.splits()["feedback"]
        if item_id is not None and item_id not in {row["id"] for row in feedback}:
            raise TaskError(f"item {item_id!r} is not a feedback item: a completion is never run on selection or test")
        code = function_in(completion, name)
        if code is None:
            return 0.0
        agent = self._reference.read_text(encoding="utf-8")
        cut = agent.find('\nif __name__ == "__main__":')
        agent = (agent[:cut] if cut >= 0 else agent) + "\n\n" + code + "\n" + (agent[cut:] if cut >= 0 else "")
        with private_scratch("sia-reward-") as scratch:
            view, work = scratch / "input", scratch / "work"
            work.mkdir()
            tags = self.write_view(view, {"feedback": feedback}, [], salt="reward")
            (work / "target_agent.py").write_text(agent, encoding="utf-8")
            sandbox.run([python, "target_agent.py", "--dataset_dir", str(view), "--working_dir", str(work / "out")],
                        work, {}, limits.for_items(len(feedback)), readable=[view])
            outcomes, _ = self.score_output(work / "out", tags, {}, sandbox=sandbox, limits=limits, python=python)
        if self._past_a_bound(outcomes.values()):
            return 0.0  # e.g. a `denoise` that only sharpens each cell's counts: no reward for gaming the metric
        scores = {key[1]: outcome.score for key, outcome in outcomes.items()}
        return scores[item_id] if item_id is not None else sum(scores.values()) / len(scores)

    def _past_a_bound(self, outcomes) -> list[str]:
        """The guards with a bound whose mean over `outcomes` is past it (as keep-best would block)."""
        crossed = []
        for guard in self.guards:
            values = [o.metrics[guard.name] for o in outcomes if o.metrics and guard.name in o.metrics]
            if values and guard.past_bound(sum(values) / len(values)):
                crossed.append(guard.name)
        return crossed

    def _score_tier(self, split, ids, outputs, problem, work, sandbox, limits, python) -> dict:
        """Outcomes of one tier. Whatever the agent's output makes go wrong (the evaluator rejects
        it, times out on it, scores it NaN) scores the tier 0 with the reason; only a fault of the
        evaluator itself raises EvaluatorError, which stops the run."""
        def zero(why: str) -> dict:
            return {(split, i): ItemOutcome(None, 0.0, why) for i in ids}

        if problem:
            return zero(problem)
        path, timeout = self.root / self.spec.evaluator, self.spec.evaluator_timeout_s
        res = self._run_evaluator(ids, outputs, work, sandbox, limits, python)
        if res.timed_out:
            # Whose fault? The same evaluator on the same tier without the agent's output: if it
            # finishes, the output made it hang (a tier scored 0, the run goes on; a resume would
            # otherwise repeat the timeout forever); if it hangs on nothing too, the evaluator is broken.
            if self._run_evaluator(ids, None, work.with_name(f"{work.name}-empty"), sandbox, limits, python).timed_out:
                raise timed_out_error(path, timeout, where=f" on the {split} tier, even on an empty output")
            return zero(f"evaluator timed out on this output after {timeout:g} s (it finishes on an empty output; "
                        "if every output times out, the reference agent's too, raise evaluator_timeout_s in "
                        "sia_task.json)")
        try:
            data = json.loads(read_child_file(work / "gen", "results.json", max_bytes=50_000_000) or b"null")
        except (UnsafeOutput, ValueError):
            data = None
        if res.returncode != 0 or not isinstance(data, dict):
            # SIA's evaluators exit non-zero on a missing or malformed submission: the agent's fault.
            return zero(f"evaluate.py failed on this output (exit {res.returncode}): "
                        f"{(res.stderr or res.stdout).strip()[-300:]}")
        reported = data.get(self.spec.metric)
        if isinstance(reported, float) and not math.isfinite(reported):  # e.g. the mean of the agent's NaNs
            return zero(f"evaluate.py scored this output {self.spec.metric} = {reported}")
        score = self._metric(data)
        if score is None:
            raise EvaluatorError(f"{path}: results.json has no number '{self.spec.metric}' (nor any top-level "
                                 "number); set metric in sia_task.json or fix the evaluator, then `sia resume RUN`")
        # Guards: a value missing (or NaN) on an item is held against the candidate by keep-best;
        # a NaN for the whole tier is, like a NaN metric, the output's doing.
        names = [g.name for g in self.spec.guards]
        if bad := [n for n in names if isinstance(data.get(n), float) and not math.isfinite(data[n])]:
            return zero(f"evaluate.py scored this output {bad[0]} = {data[bad[0]]}")
        per_item = _items(data.get("items"), names, self.spec.metric)
        tier = {n: float(data[n]) for n in names if finite_number(data.get(n))}
        if per_item is None:
            return {(split, i): ItemOutcome(None, score, metrics=tier or None) for i in ids}
        return {(split, i): ItemOutcome(per_item.get(i, {}).get("prediction"), per_item.get(i, {}).get("score", 0.0),
                                        None if i in per_item else "evaluate.py gave no result for this item",
                                        metrics=(tier | per_item.get(i, {}).get("metrics", {})) or None)
                for i in ids}

    def _run_evaluator(self, ids: list[str], outputs: Path | None, work: Path, sandbox, limits, python: str):
        """evaluate.py run once in `work`, a fresh 0700 folder holding the task cut to `ids` (task/)
        and a copy of `outputs` (gen/, empty without them). The agent's own results.json, file or
        folder, is left out: only the evaluator writes the score there."""
        make_private_dir(work)
        for sub in ("public", "private"):
            copy_restricted(self.root / "data" / sub, work / "task" / "data" / sub, set(self.item_ids), set(ids),
                            private=True)
        make_private_dir(work / "gen")
        if outputs is not None:
            copy_private_tree(outputs, work / "gen", leave_out=frozenset({"results.json"}))
        return run_timed(sandbox, [python, str(Path("task") / self.spec.evaluator), "--gen-dir", "gen"], work, limits,
                         self.spec.evaluator_timeout_s)

    def _metric(self, data: dict) -> float | None:
        numbers = [v for k, v in data.items() if finite_number(v)]
        value = data.get(self.spec.metric)
        return float(value) if finite_number(value) else (float(numbers[0]) if numbers else None)


def _items(items, guards: list[str] = (), metric: str = "") -> dict[str, dict] | None:
    """id -> {score, prediction, metrics: {guard: value}} from results.json's items[] (an item's score:
    its value of `metric` where it has one, else its `score` or `correct`); None when there are none."""
    if not isinstance(items, list) or not items:
        return None
    out = {}
    for it in items:
        if not isinstance(it, dict):
            continue
        key = next((it[k] for k in ("id", "item_id", "question_id") if k in it), None)
        value = it[metric] if metric in it else it.get("score", it.get("correct", it.get("is_correct")))
        if key is None or not (finite_number(value) or isinstance(value, bool)):
            continue
        pred = it.get("prediction")
        out[str(key)] = {"score": float(value), "prediction": None if pred is None else str(pred)[:1000],
                         "metrics": {g: float(it[g]) for g in guards if finite_number(it.get(g))}}
    return out or None


def function_in(completion: str, name: str) -> str | None:
    """The code of `def name(...)` in a completion: the last fenced block defining it (or the whole
    text when it has no fences); None when there is none or it does not parse."""
    import ast

    blocks = re.findall(r"```(?:python|py)?[ \t]*\n(.*?)```", completion or "", flags=re.S) or [completion or ""]
    for block in reversed(blocks):
        try:
            tree = ast.parse(block)
        except (SyntaxError, ValueError):
            continue
        if any(isinstance(node, ast.FunctionDef) and node.name == name for node in tree.body):
            return block
    return None
