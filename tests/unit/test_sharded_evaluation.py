"""Sharded evaluation (`RunConfig.eval_shards`, nodes/evaluation.py): a split's items run as N
sandboxed agents at once, and every item's result, every recorded model call and the loop's
scores are those of the unsharded run; each shard keeps its own logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sia.graph.state import Candidate, SIAInput
from sia.nodes.common import sha
from sia.nodes.evaluation import evaluate, shard_rows
from tests.fakes import REFERENCE_AGENT, fake_config, fake_services, make_tiny_task, run_graph, shutdown

META_KEEP = json.dumps({"edit": "none"})
SPLITS = ["feedback", "selection", "test"]


def test_shards_deal_each_split_round_robin():
    todo = {"a": [{"id": str(k)} for k in range(5)], "b": [{"id": "x"}]}
    shards = shard_rows(todo, 3)
    assert [{s: [r["id"] for r in rows] for s, rows in shard.items()} for shard in shards] == [
        {"a": ["0", "3"], "b": ["x"]}, {"a": ["1", "4"]}, {"a": ["2"]}]
    assert shard_rows(todo, 1) == [todo] and len(shard_rows({"a": [{"id": "0"}]}, 8)) == 1


def _evaluate(tmp_path: Path, task_dir: Path, shards: int, splits: list[str] = SPLITS):
    run_id = f"s{shards}"
    svc = fake_services(tmp_path, run_id, [], [], config=fake_config(tmp_path, eval_shards=shards))
    code = REFERENCE_AGENT.read_text()
    path = tmp_path / f"agent{shards}.py"
    path.write_text(code)
    cand = Candidate(generation=1, lever="meta", scaffold_path=str(path), scaffold_sha=sha(code), adapter=None)
    logs = tmp_path / f"logs{shards}"
    task, views = svc.task(str(task_dir)), []
    write_view = task.write_view

    def recording_view(dest, predict, pool, **kwargs):  # what each agent was shown
        views.append(({r["id"] for rows in predict.values() for r in rows}, {r["id"] for r in pool}))
        return write_view(dest, predict, pool, **kwargs)

    task.write_view = recording_view
    try:
        scores = evaluate(svc, task, cand, splits, log_dir=logs)
        with svc.db.lock:
            calls = [(r["item"], r["messages"], r["completion"]) for r in svc.db.db["model_calls"].rows]
    finally:
        shutdown(svc)
    tag_to_item = {i.tag: (i.split, i.item_id) for s in scores.values() for i in s.items}
    items = {(i.split, i.item_id): (i.prediction, i.gold, i.score, i.error, i.metrics)
             for s in scores.values() for i in s.items}
    calls = sorted((tag_to_item[tag], messages, completion) for tag, messages, completion in calls)
    evaluated = set().union(*(predicted for predicted, _ in views))
    # what an agent finds in its training pool (write_view hides the items it predicts): no item evaluated
    assert len(views) == shards and all(not (pool - predicted) & evaluated for predicted, pool in views)
    return scores, items, calls, sorted(p.name for p in logs.iterdir())


def test_sharded_equals_unsharded_item_by_item(tmp_path):
    task_dir = make_tiny_task(tmp_path / "tiny")
    whole, whole_items, whole_calls, whole_logs = _evaluate(tmp_path, task_dir, 1)
    sharded, sharded_items, sharded_calls, sharded_logs = _evaluate(tmp_path, task_dir, 3)
    assert sharded_items == whole_items and len(whole_items) == sum(s.n for s in whole.values())
    assert sharded_calls == whole_calls and whole_calls  # the same prompts and answers, item by item
    for split in SPLITS:
        assert sharded[split].score == pytest.approx(whole[split].score)
        assert [(i.split, i.item_id) for i in sharded[split].items] == [(i.split, i.item_id) for i in whole[split].items]
    stem = "task_feedback-selection-test"
    assert f"{stem}_stdout.log" in whole_logs
    assert {f"{stem}_shard{k}_stdout.log" for k in range(3)} <= set(sharded_logs)
    timings = [json.loads(line) for line in (tmp_path / "runs" / "s3" / "timings.jsonl").read_text().splitlines()]
    assert timings[-1]["shards"] == 3


def test_rollout_shards_hide_each_others_items_which_the_pool_holds(tmp_path):
    """Rollout items come from the training pool: a shard's view must hide the other shards' too."""
    task_dir = make_tiny_task(tmp_path / "tiny")
    whole_items = _evaluate(tmp_path, task_dir, 1, ["rollout"])[1]
    assert _evaluate(tmp_path, task_dir, 2, ["rollout"])[1] == whole_items and whole_items


def test_a_sharded_loop_scores_as_the_unsharded_one(tmp_path):
    task_dir = make_tiny_task(tmp_path / "tiny")
    histories = []
    for shards in (1, 2):
        svc = fake_services(tmp_path, f"loop{shards}", [META_KEEP] * 3, [json.dumps({"edit": "retrieved-shots-2"})] * 3,
                            config=fake_config(tmp_path, eval_shards=shards))
        try:
            final = run_graph(svc, SIAInput(run_id=f"loop{shards}", task=str(task_dir), max_generations=2,
                                            policy="scaffold-only"))
        finally:
            shutdown(svc)
        histories.append([(h.generation, h.lever, h.feedback, h.selection, h.test, h.accepted) for h in final["history"]])
    assert histories[0] == histories[1] and len(histories[0]) == 2
