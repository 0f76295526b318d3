"""The lawbench task: prepared from the `sia-agent==0.6.0` wheel (PyPI, cached), scored like the
published split, and driven by the real loop to its second generation with scripted LLMs."""

from __future__ import annotations

import csv
import json

import pytest

from sia.graph.state import SIAInput
from sia.tasks.classification.edits import LIBRARY, apply_edit
from sia.tasks.registry import REFERENCE_AGENTS, resolve_task
from tests.fakes import fake_model_cache, fake_services, run_graph, shutdown


@pytest.fixture(scope="module")
def lawbench():
    return resolve_task("lawbench")


def test_the_published_split_is_laid_out_whole(lawbench):
    splits = lawbench.splits()
    assert len(lawbench.classes) == 191 and len(splits["test"]) == 913
    assert sum(len(splits[s]) for s in ("feedback", "selection", "pool")) == 5332
    assert all(r["label"] in lawbench.classes for r in splits["test"])
    assert (lawbench.root / "data" / "private").stat().st_mode & 0o077 == 0


def test_lawbench_mini_splits_and_a_stale_cached_spec_is_replaced():
    task = resolve_task("lawbench-mini")
    (task.root / "sia_task.json").write_text(json.dumps({"name": "lawbench-mini"}))  # as prepared before 2026-11-26
    task = resolve_task("lawbench-mini")
    splits = task.splits()
    sizes = {name: len(rows) for name, rows in splits.items()}
    assert sizes == {"feedback": 24, "selection": 108, "pool": 228, "test": 60}
    for name in ("feedback", "selection"):
        assert {c: sum(r["label"] == c for r in splits[name]) for c in task.classes} == dict.fromkeys(
            task.classes, sizes[name] // 12)


def score(task, labels: dict[str, str]) -> float:
    rows = task.splits()["test"]
    return sum(task.score_item(labels.get(r["id"]), r["label"]) for r in rows) / len(rows)


def test_reference_submissions_score_what_they_should(lawbench):
    rows = lawbench.splits()["test"]
    assert score(lawbench, {r["id"]: r["label"] for r in rows}) == 1.0
    with open(lawbench.root / "data/public/sample_submission.csv", encoding="utf-8") as f:
        sample = {r["id"]: r["label"] for r in csv.DictReader(f)}
    assert score(lawbench, sample) == pytest.approx(5 / 913)  # all "[走私、贩卖、运输、制造]毒品"
    assert score(lawbench, {}) == 0.0  # a missing id is wrong
    assert score(lawbench, {r["id"]: r["label"] + " " for r in rows}) == 0.0  # an out-of-list label is wrong


def test_sia_run_reaches_generation_2_on_lawbench(tmp_path, monkeypatch, lawbench):
    monkeypatch.setenv("SIA_CACHE_DIR", str(fake_model_cache(tmp_path / "cache")))
    rewrite = "```python\n" + apply_edit(REFERENCE_AGENTS["lawbench"].read_text(), LIBRARY[0]) + "```"
    svc = fake_services(tmp_path, "lb", [json.dumps({"edit": "none"})],
                        [json.dumps({"diagnosis": "no examples in the prompt", "lever": "scaffold"}), rewrite],
                        feedback_writes_code=True)
    try:
        out = run_graph(svc, SIAInput(run_id="lb", task=str(lawbench.root), max_generations=2, policy="llm", limit=5))
    finally:
        shutdown(svc)
    assert [h.generation for h in out["history"]] == [1, 2]
    assert out["history"][1].lever == "scaffold" and out["history"][1].selection is not None
    assert json.loads((svc.paths.gen(2) / "results.json").read_text())["n"]["selection"] == 5


@pytest.mark.slow
def test_sia_run_on_lawbench_end_to_end_with_the_embedded_model(tmp_path, lawbench):
    """`sia run --task lawbench --limit 6` as a user types it: the real embedded model, sandbox,
    edit search (generation 1 and the rewrite), classifier tool and LoRA training, three levers."""
    import subprocess
    import sys
    from pathlib import Path

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"rollout_items": 6, "scaffold": {"search_items_budget": 12},
                                  "finetune": {"max_steps": 2, "batch_size": 4, "save_steps": 1, "min_examples": 2}}))
    sia = Path(sys.executable).with_name("sia")
    done = subprocess.run([str(sia), "run", "--task", "lawbench", "--limit", "6", "--generations", "3", "--policy",
                           "alternate", "--run-id", "lb", "--runs-dir", str(tmp_path / "runs"), "--config", str(config)],
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr and "BrokenPipe" not in done.stdout + done.stderr
    root = tmp_path / "runs" / "lb"
    summary = json.loads((root / "summary.json").read_text())
    assert [g["lever"] for g in summary["generations"]] == ["meta", "scaffold", "weights"]
    first = json.loads((root / "gen_1" / "results.json").read_text())
    assert first["accepted"] and first["n"] == {"selection": 6, "feedback": 6, "test": 6}
    assert json.loads((root / "gen_1" / "edit_search.json").read_text())  # the Meta-Agent searched
    for log in root.glob("gen_*/*_sandbox.json"):
        assert not json.loads(log.read_text())["timed_out"], log
    timings = [json.loads(line) for line in (root / "timings.jsonl").read_text().splitlines()]
    assert {"search", "task"} <= {t["purpose"] for t in timings if "purpose" in t}  # agent runs (else node rows)
    assert {"meta", "task", "feedback", "propose_scaffold", "train_adapter"} <= {t.get("node") for t in timings}
    assert "Where the time went" in (root / "summary.md").read_text()
