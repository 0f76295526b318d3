"""examples/lora_dev_probe.py on the tiny task with fakes: adapters are trained on the rows the
finetune subgraph would build, and base and adapters are scored on held-out pool items only."""

from __future__ import annotations

import json

import pytest

from sia.nodes.evaluation import evaluate
from sia.tasks.csv_task import CsvTask
from tests.examples import load_example
from tests.fakes import fake_model_cache, fake_services, make_tiny_task, shutdown


@pytest.fixture
def svc(tmp_path, monkeypatch):
    monkeypatch.setenv("SIA_CACHE_DIR", str(fake_model_cache(tmp_path / "cache")))
    services = fake_services(tmp_path, "probe", [], [])
    yield services
    shutdown(services)


def test_probe_scores_adapters_on_held_out_pool_items(tmp_path, svc):
    task = CsvTask.load(make_tiny_task(tmp_path / "tiny"))
    example, reported, dev_runs = load_example("lora_dev_probe"), [], []

    def evaluate_spy(svc, task, candidate, splits, **kwargs):
        if "dev" in splits:
            dev_runs.append((candidate.adapter, len(kwargs["rows_override"]["dev"])))
        return evaluate(svc, task, candidate, splits, **kwargs)

    example.evaluate = evaluate_spy
    results, stats = example.probe(svc, task, [], [{"learning_rate": 1e-3}], dev_items=4, dev_chunk=3,
                                   report=reported.append)
    assert reported == results
    # Dev is scored 3 items per agent run, so each run's view keeps the other dev items as
    # training data, as the selection split's views keep the whole pool.
    assert dev_runs == [(None, 3), (None, 1), ("adapters/probe_0", 3), ("adapters/probe_0", 1)]

    # The fake base answers the first allowed label zero-shot; the fake adapter reads the keyword.
    assert [r["model"] for r in results] == ["base", json.dumps({"learning_rate": 1e-3})]
    assert results[1]["dev"] == 1.0 > results[0]["dev"]
    assert results[1]["losses"] == 0 and results[1]["wins"] == pytest.approx(1.0 - results[0]["dev"])
    (call,) = svc.trainer.calls
    rows = call["dataset"].read_text().splitlines()
    assert len(rows) == stats["rewarded"] + stats["gold_target"] == 3 + 6  # feedback + rollout items
    # What the adapter was asked is exactly the dev items, and none of them is a training row.
    asked = {req.messages[-1]["content"] for req in svc.backend_for.backends["adapters/probe_0"].requests}
    trained = {json.loads(row)["messages"][-1]["content"] for row in rows}
    assert len(asked) == 4 and not asked & trained
    dev_texts = [r["text"] for r in task.splits()["pool"][-4:]]
    assert all(any(text[:40] in prompt for prompt in asked) for text in dev_texts)
    with svc.db.lock:
        stored = {r["split"] for r in svc.db.db.query("select split from item_results where run_id = 'probe'")}
    assert stored == {"feedback", "rollout"}  # dev outcomes are never stored, so never become training rows


def test_probe_refuses_a_dev_slice_that_overlaps_the_rollouts(tmp_path, svc):
    task = CsvTask.load(make_tiny_task(tmp_path / "tiny"))
    with pytest.raises(ValueError, match="do not fit the training pool"):
        load_example("lora_dev_probe").probe(svc, task, [], [], dev_items=len(task.splits()["pool"]))


def test_probe_names_an_unknown_edit(tmp_path, svc):
    task = CsvTask.load(make_tiny_task(tmp_path / "tiny"))
    with pytest.raises(ValueError, match="unknown edits \\['retrieved-shots-9'\\]"):
        load_example("lora_dev_probe").probe(svc, task, ["retrieved-shots-9"], [], dev_items=4)


def test_a_grpo_variant_trains_on_the_recorded_prompts_with_their_reward_specs(tmp_path, svc):
    task = CsvTask.load(make_tiny_task(tmp_path / "tiny"))
    results, _ = load_example("lora_dev_probe").probe(svc, task, [], [{"method": "grpo"}], dev_items=4)
    (call,) = svc.trainer.calls
    assert call["config"].method == "grpo" and results[1]["method"] == "grpo"
    rows = [json.loads(line) for line in call["dataset"].read_text().splitlines()]
    assert len(rows) == results[1]["rows"] == 3 + 6  # one per recorded feedback and rollout prompt
    assert all("completion" not in r and json.loads(r["reward_spec"])["kind"] == "label" for r in rows)
