"""Transfer checks: does what a run learned carry over to a related task it never trained or
selected on? Each of the run's incumbents (its accepted generations in order, scaffold and adapter
together) is evaluated on the other task exactly as the loop evaluates a candidate: through
`nodes.evaluation.evaluate`, in the sandbox, with the run's gateway serving the adapter. The
numbers and the files are `sia.transfer_table`'s.

    from sia.nodes.services import Services
    from sia.nodes.transfer import transfer_check
    svc = Services.build(RunConfig.load(Path("runs/RUN/config.json")), "RUN")
    report = transfer_check(svc, "lawbench-mini", resolve_task("lawbench-mini-b"))

Nothing of a transfer check enters the run's own records that the loop reads: its items are
scored with `rows_override`, so they never reach the item cache (keyed by scaffold, adapter and
split, not by task: a cached transfer item would pass for the run's own), and its model calls are
recorded with purpose "transfer", which fine-tuning never trains on (`finetune.records`).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from sia.checkpoints.paths import RunPaths
from sia.checkpoints.rundb import RunDB
from sia.files import write_json_atomic, write_text_atomic
from sia.graph.context import Services
from sia.graph.state import Candidate
from sia.nodes.evaluation import evaluate, items_jsonl
from sia.nodes.finish import write_summary_markdown
from sia.records import ItemResult
from sia.tasks.base import SPLITS, Task
from sia.transfer_table import FOLDER, file_stem, transfer_markdown, transfer_report

PURPOSE = "transfer"  # of the gateway calls; finetune.records trains only on "task" and "rollout" calls


class TransferError(ValueError):
    """A transfer check that cannot be made; the message names the thing and the fix."""


def incumbents_of(paths: RunPaths) -> list[dict]:
    """The run's accepted generations in order, from run.db: {generation, lever, adapter,
    scaffold_sha, own_test} (own_test: its stored score on the run's private test split)."""
    return [{"generation": g["generation"], "lever": g["lever"], "adapter": g.get("adapter"),
             "scaffold_sha": g["scaffold_sha"], "own_test": g.get("test")}
            for g in RunDB.read_generations(paths.run_db, paths.run_id) if g.get("accepted")]


def scaffold_file(paths: RunPaths, generation: int, scaffold_sha: str) -> Path:
    """The run's target_agent.py with this hash: its own generation's, else an earlier one's (a
    weights generation serves its adapter under the incumbent's scaffold and writes none)."""
    folders = [paths.gen(generation)] + sorted(paths.root.glob("gen_*"), key=lambda p: p.name)
    for folder in folders:
        path = folder / "target_agent.py"
        if path.is_file() and hashlib.sha256(path.read_text(encoding="utf-8").encode()).hexdigest() == scaffold_sha:
            return path
    raise TransferError(f"generation {generation}'s scaffold (sha {scaffold_sha[:12]}) is in no gen_*/target_agent.py "
                        f"of {paths.root}; the run folder is incomplete")


def declared_transfers(task: Task) -> list[str]:
    """The task's declared transfer sets (`transfer_tasks` in its sia_task.json): built-in or
    prepared task names, or folders (a relative folder is taken from the task's own folder)."""
    out = []
    for entry in getattr(task, "transfer_tasks", ()) or ():
        beside = Path(task.root) / entry
        out.append(str(beside.resolve()) if not Path(entry).is_absolute() and beside.is_dir() else entry)
    return out


def transfer_check(svc: Services, run_task: str, other: Task, split: str = "test", limit: int | None = None,
                   on_progress=lambda text: None) -> dict:
    """Score every incumbent of `svc`'s run on `split` of `other` (at most `limit` items), write
    `runs/RUN/transfer/NAME.{json,md}` and `NAME_items.jsonl`, and return the report (see
    `sia.transfer_table`), and rewrite the run's summary.md with it. `run_task` is the run's own
    task name, for the report. Raises
    TransferError for a run without an incumbent or an empty split; `ProtectedFilesChanged` and
    `EvaluationInterrupted` come from `evaluate` as they do in the loop."""
    from sia.sandbox.runner import isolation_level

    paths = svc.paths
    if split not in SPLITS:
        raise TransferError(f"split '{split}': choose one of {', '.join(SPLITS)}")
    incumbents = incumbents_of(paths)
    if not incumbents:
        raise TransferError(f"run '{paths.run_id}' has no accepted generation yet, so no incumbent to transfer; "
                            f"let it finish (`sia resume {paths.run_id}`) first")
    rows = other.splits(limit)[split]
    if not rows:
        raise TransferError(f"task '{other.name}' has no items in its {split} split; pick another --split")
    isolation = isolation_level(svc.config.sandbox)
    stem = file_stem(other.name)
    items: list[list[ItemResult]] = []
    for k, inc in enumerate(incumbents, 1):
        on_progress(f"incumbent {k}/{len(incumbents)}: generation {inc['generation']} "
                    f"({inc['adapter'] or 'base'}) on {len(rows)} {split} items of {other.name}")
        candidate = Candidate(generation=inc["generation"], lever=inc["lever"], adapter=inc["adapter"],
                              scaffold_sha=inc["scaffold_sha"],
                              scaffold_path=str(scaffold_file(paths, inc["generation"], inc["scaffold_sha"])))
        # rows_override: scored, never cached (the cache key has no task), never saved in run.db
        scored = evaluate(svc, other, candidate, [split], limit=limit, purpose=PURPOSE, rows_override={split: rows},
                          log_dir=paths.root / FOLDER / f"{stem}_logs" / f"gen_{inc['generation']}")[split]
        items.append(scored.items)
        inc["score"] = scored.score
    own = [RunDB.read_item_scores(paths.run_db, paths.run_id, inc["scaffold_sha"], inc["adapter"], "test")
           for inc in incumbents]
    per_item = [{i.item_id: float(i.score) for i in group} for group in items]
    order = ("generation", "lever", "adapter", "scaffold_sha", "score", "own_test")
    report = {"run_id": paths.run_id, "run_task": run_task, "task": other.name, "task_root": str(other.root),
              "split": split, "n": len(rows), "limit": limit, "metric": getattr(getattr(other, "spec", None), "metric", None),
              "isolation": isolation, "created": time.time(), "items_file": f"{stem}_items.jsonl",
              **transfer_report([{k: inc.get(k) for k in order} for inc in incumbents], per_item, own)}
    write_report(paths.root, stem, report, [i for group in items for i in group])
    write_summary_markdown(paths)  # the run's summary.md states each change's transfer too (nothing before the run ends)
    return report


def write_report(run_root: Path, stem: str, report: dict, items: list[ItemResult]) -> None:
    """The three files, each atomically. The old report goes first: were the process killed between
    the writes, no report would stand beside items it does not describe (a rerun writes all three)."""
    folder = Path(run_root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").unlink(missing_ok=True)
    write_text_atomic(folder / f"{stem}_items.jsonl", items_jsonl(items))
    write_text_atomic(folder / f"{stem}.md", transfer_markdown(report))
    write_json_atomic(folder / f"{stem}.json", report)
