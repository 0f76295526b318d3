"""Running a candidate agent on item splits and scoring it: the one place generated code runs.

The agent runs in the sandbox (its own uid, scrubbed environment, limits, timeout) in a
scratch folder outside the private run folder, sees only a view of the public data, and
reaches the target model only through a per-evaluation gateway token. Scores are computed
here, in the parent, against labels the child could never open. Results are cached by
(scaffold, adapter, split), so a resumed or repeated evaluation costs nothing.

`evaluate` reads top to bottom: which rows, what is cached, then for the rest one agent run
(`run_agent`), its scoring (`item_results`) and the database.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sia.files import append_jsonl, write_json_atomic, write_text_atomic
from sia.gateway.server import CallScope
from sia.graph.context import Services
from sia.graph.state import Candidate
from sia.records import ItemResult
from sia.sandbox.boxes import recorded_scratch
from sia.sandbox.files import UnsafeOutput, read_child_file
from sia.tasks.base import ItemOutcome, Row, Tags, Task


class EvaluationInterrupted(RuntimeError):
    """The run is stopping (Ctrl-C, SIGTERM) and killed the agent: nothing of this evaluation is
    scored or cached, so a resumed run evaluates it again."""


class ProtectedFilesChanged(RuntimeError):
    """A protected task file changed while an agent ran: the generation is void, the run flagged."""


@dataclass
class SplitScore:
    score: float
    n: int
    items: list[ItemResult]

    @classmethod
    def of(cls, items: list[ItemResult]) -> "SplitScore":
        return cls(sum(i.score for i in items) / max(1, len(items)), len(items), items)


@dataclass
class AgentRun:
    """What one sandboxed agent run left: its output folder (deleted when the run's block ends),
    the tags its items had, and what went wrong with the run as a whole (None: nothing)."""

    out_dir: Path
    tags: Tags
    result: object  # sandbox.runner.SandboxResult
    token: str


def evaluate(svc: Services, task: Task, candidate: Candidate, splits: list[str], *, limit: int | None = None,
             purpose: str = "task", log_dir: Path | None = None, rows_override: dict[str, list[Row]] | None = None,
             emit=lambda event: None) -> dict[str, SplitScore]:
    """Scores of `candidate` on each split in `splits` (cached per scaffold/adapter/split;
    `rows_override` scores other rows, e.g. a smoke run, and is never cached)."""
    task_splits = task.splits(limit)
    task_splits["rollout"] = task_splits["pool"][: svc.config.rollout_items]
    rows = {s: (rows_override or {}).get(s) or task_splits[s] for s in splits}
    out: dict[str, SplitScore] = {}
    for split in splits:
        if not rows[split]:  # e.g. the rollout split of a task without a training pool
            out[split] = SplitScore(0.0, 0, [])
        elif not rows_override and (cached := _cached(svc, candidate, split, len(rows[split]))):
            out[split] = cached
    todo = {s: rows[s] for s in splits if s not in out}
    if not todo:
        return out
    emit({"event": "rollout", "generation": candidate.generation, "splits": list(todo),
          "items": sum(len(r) for r in todo.values())})
    gold = {(s, r["id"]): r["label"] for s, group in todo.items() for r in group}

    def run_and_score(shard: int | None, predict: dict[str, list[Row]], pool: list[Row]) -> tuple[list[ItemResult], float]:
        with run_agent(svc, task, candidate, predict, pool, purpose, log_dir, shard) as run:
            outcomes, problem = task.score_output(run.out_dir, run.tags, gold, sandbox=svc.sandbox,
                                                  limits=svc.config.sandbox, python=svc.python)
            error = problem and _run_error(problem, run)
        return item_results(svc.paths.run_id, candidate, run.tags, outcomes, gold, error), run.result.wall_s

    shards = shard_rows(todo, svc.config.eval_shards if getattr(task, "per_item_calls", True) else 1)
    if len(shards) == 1:
        items, wall_s = run_and_score(None, todo, task_splits["pool"])
    else:  # each shard its own sandbox, all at once (the gateway started first, once)
        svc.gateway
        # Every shard's view hides all the evaluation's items, as the unsharded view does: a shard
        # must not find another shard's items, with their answers, in its training pool.
        evaluated = {r["id"] for rows in todo.values() for r in rows}
        pool_rows = [r for r in task_splits["pool"] if r["id"] not in evaluated]
        with ThreadPoolExecutor(len(shards), thread_name_prefix="sia-shard") as workers:
            done = list(workers.map(run_and_score, range(len(shards)), shards, [pool_rows] * len(shards)))
        items, wall_s = [i for shard_items, _ in done for i in shard_items], max(w for _, w in done)
    order = {(s, r["id"]): k for k, (s, r) in enumerate((s, r) for s, group in todo.items() for r in group)}
    items.sort(key=lambda i: order[(i.split, i.item_id)])  # in the split's row order, however it was sharded
    append_timing(svc, {"generation": candidate.generation, "purpose": purpose,
                        "items": {s: len(r) for s, r in todo.items()}, "wall_s": round(wall_s, 2)}
                  | ({"shards": len(shards)} if len(shards) > 1 else {}))
    for split in todo:
        split_items = [i for i in items if i.split == split]
        if not rows_override:
            svc.db.save_items(split_items)
        out[split] = SplitScore.of(split_items)
    return out


def shard_rows(todo: dict[str, list[Row]], n: int) -> list[dict[str, list[Row]]]:
    """`todo`'s items dealt into at most `n` non-empty shards, round robin within each split (so
    every shard gets a like share of each split); one shard when n is 1 or there is one item."""
    n = max(1, min(n, sum(len(rows) for rows in todo.values())))
    shards = [{split: rows[k::n] for split, rows in todo.items() if rows[k::n]} for k in range(n)]
    return [shard for shard in shards if shard]


def append_timing(svc: Services, row: dict) -> None:
    """One line of the run's timings.jsonl (a few per generation, so appending is cheap)."""
    append_jsonl(svc.paths.timings, row)


def _cached(svc: Services, candidate: Candidate, split: str, n: int) -> SplitScore | None:
    items = svc.db.cached_items(svc.paths.run_id, candidate.scaffold_sha, candidate.adapter, split)
    return SplitScore.of(items) if items and len(items) == n else None


@contextmanager
def run_agent(svc: Services, task: Task, candidate: Candidate, predict: dict[str, list[Row]], pool: list[Row],
              purpose: str, log_dir: Path | None, shard: int | None = None) -> Iterator[AgentRun]:
    """Run the candidate's agent once in the sandbox on a fresh view of `predict` (and `pool`);
    the scratch folder, its output included, is gone when the block ends. `shard`: which of an
    evaluation's shards this is (its logs get a `_shardK` suffix); None: the whole evaluation."""
    run_id, gen = svc.paths.run_id, candidate.generation
    protected = task.fingerprint()
    with recorded_scratch(svc.paths.sandboxes, prefix=f"sia-{run_id}-g{gen}-") as scratch:
        view, work = scratch / "input", scratch / "work"
        work.mkdir()
        # a shard's tags carry its number: tags stay unique across an evaluation's shards (the
        # gateway's records are joined to item results by tag)
        tags = task.write_view(view, predict, pool, salt=f"{run_id}:{gen}:{purpose}",
                               prefix=f"g{gen}{purpose[0]}{_digest(list(predict), svc.paths.tag_salt())}-"
                                      + ("" if shard is None else f"s{shard}"))
        shutil.copy(candidate.scaffold_path, work / "target_agent.py")
        gateway = svc.gateway  # read once: the token, the URL and the revocation are the same gateway's
        token = gateway.issue_token(CallScope(run_id, gen, candidate.adapter, purpose), tags=set(tags))
        env = {name: os.environ[name] for name in task.agent_env if name in os.environ}
        env |= {"OPENAI_BASE_URL": gateway.base_url, "OPENAI_API_KEY": token, "SIA_MODEL": svc.config.target.model}
        limits = svc.config.sandbox.for_items(sum(len(rows) for rows in predict.values()))
        try:
            result = svc.sandbox.run([svc.python, "target_agent.py", "--dataset_dir", str(view), "--working_dir",
                                      str(work / "out")], work, env, limits, readable=[view],
                                     forward_ports=[gateway.port])
        finally:
            gateway.revoke_token(token)
        if getattr(result, "interrupted", False):
            raise EvaluationInterrupted(f"generation {gen}'s {purpose} run was stopped with the run")
        _check_protected(svc, task, protected, gen, purpose)
        if log_dir is not None:
            stem = f"{purpose}_{'-'.join(predict)}" + ("" if shard is None else f"_shard{shard}")
            _keep_logs(log_dir, stem, result, work / "out", secret=token,
                       outputs=("agent_execution.json", task.submission))
        yield AgentRun(work / "out", tags, result, token)


def _check_protected(svc: Services, task: Task, before: dict[str, str], generation: int, purpose: str) -> None:
    now = task.fingerprint()
    if changed := sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k)):
        why = f"protected task files changed while generation {generation}'s agent ran: {', '.join(changed)}"
        svc.db.save_flag({"run_id": svc.paths.run_id, "generation": generation, "purpose": purpose, "why": why})
        raise ProtectedFilesChanged(why)


def _run_error(problem: str, run: AgentRun) -> str:
    """What every item of a run whose output could not be read is marked with (token blanked)."""
    r = run.result
    return (f"{problem}; exit code {r.returncode}{' (timed out)' if r.timed_out else ''}: "
            f"{r.stderr[-500:].replace(run.token, '<token>')}")


def item_results(run_id: str, candidate: Candidate, tags: Tags, outcomes: dict[tuple[str, str], ItemOutcome],
                 gold: dict[tuple[str, str], str | None], run_error: str | None) -> list[ItemResult]:
    """One ItemResult per tagged item, in tag order."""
    return [ItemResult(run_id=run_id, generation=candidate.generation, scaffold_sha=candidate.scaffold_sha,
                       adapter=candidate.adapter or "base", split=split, item_id=item_id, tag=tag,
                       prediction=outcomes[(split, item_id)].prediction, gold=gold[(split, item_id)],
                       score=outcomes[(split, item_id)].score, error=run_error or outcomes[(split, item_id)].error,
                       metrics=outcomes[(split, item_id)].metrics)
            for tag, (split, item_id) in tags.items()]


def _digest(splits: list[str], salt: str) -> str:
    """Tells evaluations of one generation apart in item tags without naming their splits
    (salted with a secret of the run, so an agent cannot tell a selection run by its tags)."""
    return hashlib.sha256(f"{salt}:{','.join(splits)}".encode()).hexdigest()[:8]  # 32 bits: runs' tags never meet


def _keep_logs(log_dir: Path, stem: str, result, out: Path, secret: str, outputs: tuple[str, ...]) -> None:
    """Keep the agent's output and files; the (already revoked) gateway token is blanked out."""
    log_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(log_dir / f"{stem}_stdout.log", result.stdout.replace(secret, "<token>"))
    write_text_atomic(log_dir / f"{stem}_stderr.log", result.stderr.replace(secret, "<token>"))
    write_json_atomic(log_dir / f"{stem}_sandbox.json", {
        "returncode": result.returncode, "timed_out": result.timed_out, "wall_s": round(result.wall_s, 2),
        "output_truncated": result.output_truncated, "killed_leftovers": result.killed_leftovers,
        "network": result.network, "isolation": result.isolation, "uid": result.uid})
    for name in outputs:
        try:
            data = read_child_file(out, name, max_bytes=50_000_000)
        except UnsafeOutput:
            continue  # refused (and reported) when the submission is read
        if data is not None:
            (log_dir / f"{stem}_{name}").write_bytes(data.replace(secret.encode(), b"<token>"))


def items_jsonl(items: list[ItemResult]) -> str:
    return "".join(json.dumps(i.row(), ensure_ascii=False) + "\n" for i in items)
