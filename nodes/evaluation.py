"""Running a candidate agent on item splits and scoring it: the one place generated code runs.

The agent runs in the sandbox (its own uid, scrubbed environment, limits, timeout) in a
scratch folder outside the private run folder, sees only a view of the public data, and
reaches the target model only through a per-evaluation gateway token. Scores are computed
here, in the parent, against labels the child could never open. Results are cached by
(scaffold, adapter, split), so a resumed or repeated evaluation costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sia.checkpoints.paths import write_json_atomic, write_text_atomic
from sia.gateway.server import CallScope
from sia.graph.state import Candidate
from sia.sandbox.files import UnsafeOutput, read_child_file
from sia.tasks.base import Task
from sia.tasks.evaluator import score_output


class ProtectedFilesChanged(RuntimeError):
    """A protected task file changed while an agent ran: the generation is void, the run flagged."""


@dataclass
class SplitScore:
    score: float
    n: int
    items: list[dict]


def evaluate(svc, task: Task, candidate: Candidate, splits: list[str], *, limit: int | None = None,
             purpose: str = "task", log_dir: Path | None = None, rows_override: dict | None = None,
             emit=lambda event: None) -> dict[str, SplitScore]:
    """Scores of `candidate` on each split in `splits` (cached per scaffold/adapter/split)."""
    run_id = svc.paths.run_id
    out: dict[str, SplitScore] = {}
    task_splits = task.splits(limit)
    task_splits["rollout"] = task_splits["pool"][: svc.config.rollout_items]
    rows = {s: (rows_override or {}).get(s) or task_splits[s] for s in splits}
    todo = []
    for split in splits:
        if not rows[split]:  # e.g. the rollout split of a task without a training pool
            out[split] = SplitScore(0.0, 0, [])
            continue
        cached = [] if rows_override else svc.db.cached_items(run_id, candidate.scaffold_sha, candidate.adapter, split)
        if cached and len(cached) == len(rows[split]):
            out[split] = SplitScore(sum(r["score"] for r in cached) / len(cached), len(cached), cached)
        else:
            todo.append(split)
    if not todo:
        return out
    emit({"event": "rollout", "generation": candidate.generation, "splits": todo,
          "items": sum(len(rows[s]) for s in todo)})
    pool = task_splits["pool"]
    task.protect()
    protected = task.fingerprint()
    scratch = Path(tempfile.mkdtemp(prefix=f"sia-{run_id}-g{candidate.generation}-"))
    try:
        view, work = scratch / "input", scratch / "work"
        work.mkdir()
        tags = task.write_view(view, {s: rows[s] for s in todo}, pool,
                               salt=f"{run_id}:{candidate.generation}:{purpose}",
                               prefix=f"g{candidate.generation}{purpose[0]}{_digest(todo, svc.paths.tag_salt())}-")
        shutil.copy(candidate.scaffold_path, work / "target_agent.py")
        token = svc.gateway.issue_token(CallScope(run_id, candidate.generation, candidate.adapter, purpose))
        env = {name: os.environ[name] for name in task.spec.agent_env if name in os.environ}
        env |= {"OPENAI_BASE_URL": svc.gateway.base_url, "OPENAI_API_KEY": token, "SIA_MODEL": svc.config.target.model}
        try:
            result = svc.sandbox.run([svc.python, "target_agent.py", "--dataset_dir", str(view), "--working_dir", str(work / "out")],
                                     work, env, svc.config.sandbox, readable=[view], forward_ports=[svc.gateway.port])
        finally:
            svc.gateway.revoke_token(token)
        now = task.fingerprint()
        if changed := sorted(k for k in set(protected) | set(now) if protected.get(k) != now.get(k)):
            why = f"protected task files changed while generation {candidate.generation}'s agent ran: {', '.join(changed)}"
            svc.db.save_flag({"run_id": run_id, "generation": candidate.generation, "purpose": purpose, "why": why})
            raise ProtectedFilesChanged(why)
        if log_dir is not None:
            _keep_logs(log_dir, f"{purpose}_{'-'.join(todo)}", result, work / "out", secret=token,
                       outputs=("agent_execution.json", task.spec.submission))
        gold = {(s, r["id"]): r["label"] for s in todo for r in rows[s]}
        outcomes, problem = score_output(task, work / "out", tags, gold, sandbox=svc.sandbox,
                                         limits=svc.config.sandbox, python=svc.python)
        error = problem and (f"{problem}; exit code {result.returncode}{' (timed out)' if result.timed_out else ''}: "
                             f"{result.stderr[-500:].replace(token, '<token>')}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    by_split: dict[str, list[dict]] = {s: [] for s in todo}
    for tag, (split, item_id) in tags.items():
        o = outcomes[(split, item_id)]
        by_split[split].append({
            "run_id": run_id, "generation": candidate.generation, "scaffold_sha": candidate.scaffold_sha,
            "adapter": candidate.adapter or "base", "split": split, "item_id": item_id, "tag": tag,
            "prediction": o["prediction"], "gold": gold[(split, item_id)], "score": o["score"],
            "error": error or o["error"]})
    for split, items in by_split.items():
        if not rows_override:
            svc.db.save_items(items)
        out[split] = SplitScore(sum(i["score"] for i in items) / max(1, len(items)), len(items), items)
    return out


def _digest(splits: list[str], salt: str) -> str:
    """Tells evaluations of one generation apart in item tags without naming their splits
    (salted with a secret of the run, so an agent cannot tell a selection run by its tags)."""
    return hashlib.sha256(f"{salt}:{','.join(splits)}".encode()).hexdigest()[:4]


def _keep_logs(log_dir: Path, stem: str, result, out: Path, secret: str, outputs: tuple[str, ...]) -> None:
    """Keep the agent's output and files; the (already revoked) gateway token is blanked out."""
    log_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(log_dir / f"{stem}_stdout.log", result.stdout.replace(secret, "<token>"))
    write_text_atomic(log_dir / f"{stem}_stderr.log", result.stderr.replace(secret, "<token>"))
    write_json_atomic(log_dir / f"{stem}_sandbox.json", {
        "returncode": result.returncode, "timed_out": result.timed_out, "wall_s": round(result.wall_s, 2),
        "output_truncated": result.output_truncated, "killed_leftovers": result.killed_leftovers,
        "network": result.network})
    for name in outputs:
        try:
            data = read_child_file(out, name, max_bytes=50_000_000)
        except UnsafeOutput:
            continue  # refused (and reported) when the submission is read
        if data is not None:
            (log_dir / f"{stem}_{name}").write_bytes(data.replace(secret.encode(), b"<token>"))


def items_jsonl(items: list[dict]) -> str:
    return "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items)
