"""Unmodified SIA task folders (`data/public/task.md`, `data/public/evaluate.py --gen-dir`,
`reference/*target_agent.py`): three disjoint tiers carved from the private items, the agent and
the evaluator each see a copy cut to the tier at hand, and the real loop reaches generation 2."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from sia.cli.main import main
from sia.graph.state import SIAInput
from sia.tasks.base import TaskError
from sia.tasks.classification.edits import LIBRARY, apply_edit
from sia.tasks.evaluator import EvaluatorError
from sia.tasks.registry import resolve_task
from sia.tasks.sia_folder import SIAFolderTask
from tests.fakes import fake_services, make_sia_folder_task, prompts_sent, run_graph, shutdown

NO_EDIT = json.dumps({"edit": "none"})


def test_tiers_are_disjoint_deterministic_and_cover_every_item(tmp_path):
    task = resolve_task(str(make_sia_folder_task(tmp_path / "sia")))
    assert isinstance(task, SIAFolderTask) and task.reference_agent.name == "reference_target_agent.py"
    tiers = {name: [r["id"] for r in rows] for name, rows in task.splits().items() if name != "pool"}
    assert [len(tiers[t]) for t in ("feedback", "selection", "test")] == [3, 3, 9]
    assert sorted(sum(tiers.values(), [])) == sorted(task.item_ids)  # disjoint and complete
    assert tiers == {n: [r["id"] for r in rows] for n, rows in resolve_task(str(task.root)).splits().items() if n != "pool"}
    assert [len(v) for k, v in task.splits(limit=2).items() if k != "pool"] == [2, 2, 2]


def test_a_malformed_sia_folder_is_refused_naming_the_file(tmp_path):
    root = make_sia_folder_task(tmp_path / "sia")
    (root / "reference" / "reference_target_agent.py").rename(root / "reference" / "notes.py")
    with pytest.raises(TaskError, match="expected one reference agent"):
        resolve_task(str(root))
    root = make_sia_folder_task(tmp_path / "sia2")
    (root / "data" / "private" / "test.csv").write_text("id,label\n")
    with pytest.raises(TaskError, match="no item table"):
        resolve_task(str(root))
    root = make_sia_folder_task(tmp_path / "sia3")
    (root / "sia_task.json").write_text(json.dumps({"name": "x", "feedback_fraction": 0.5, "selection_fraction": 0.5}))
    with pytest.raises(TaskError, match="test tier"):
        resolve_task(str(root))
    (root / "sia_task.json").write_text(json.dumps({"name": "x", "item_table": "data/private/answers.csv"}))
    with pytest.raises(TaskError, match="answers.csv: missing; item_table"):
        resolve_task(str(root))


def write_submission(path, labels: dict[str, str]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("id", "label"), *labels.items()])


@pytest.mark.parametrize("items", [True, False])
def test_sia_eval_runs_the_unmodified_evaluator_on_one_tier(tmp_path, capsys, items):
    root = make_sia_folder_task(tmp_path / "sia", items=items)
    task = resolve_task(str(root))
    with open(root / "data" / "private" / "test.csv") as f:
        gold = {r["id"]: r["label"] for r in csv.DictReader(f)}
    test_ids = [r["id"] for r in task.splits()["test"]]
    half = {i: gold[i] if n % 3 else "arson" for n, i in enumerate(test_ids)}  # every 3rd wrong
    write_submission(tmp_path / "submission.csv", half)
    assert main(["eval", "--task-dir", str(root), "--submission", str(tmp_path / "submission.csv")]) == 0
    expected = sum(half[i] == gold[i] for i in test_ids) / len(test_ids)
    assert f"accuracy {expected:.5f} on 9 test items" in capsys.readouterr().out
    # the selection tier's evaluator saw only selection ids: a test-only submission scores 0 there
    assert main(["eval", "--task-dir", str(root), "--submission", str(tmp_path / "submission.csv"),
                 "--split", "selection"]) == 0
    assert "accuracy 0.00000 on 3 selection items" in capsys.readouterr().out
    # a folder of outputs is scored as it is; SIA's evaluator exits 1 without a submission.csv
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "notes.txt").write_text("no submission here\n")
    assert main(["eval", "--task-dir", str(root), "--submission", str(tmp_path / "outputs")]) == 1
    assert "No submission.csv found" in capsys.readouterr().out
    # a results.json the agent wrote itself is not a score
    (tmp_path / "outputs" / "results.json").write_text(json.dumps({"accuracy": 1.0, "items": [
        {"id": i, "correct": True} for i in gold]}))
    assert main(["eval", "--task-dir", str(root), "--submission", str(tmp_path / "outputs")]) == 1
    assert "accuracy 0.00000" in capsys.readouterr().out


def test_the_loop_reaches_generation_2_on_an_sia_folder(tmp_path):
    root = make_sia_folder_task(tmp_path / "sia")
    task = resolve_task(str(root))
    reference = task.reference_agent.read_text()
    rewrite = "```python\n" + apply_edit(reference, LIBRARY[0]) + "```"
    svc = fake_services(tmp_path, "sf", [NO_EDIT], [json.dumps({"diagnosis": "no examples", "lever": "scaffold"}),
                                                     rewrite], feedback_writes_code=True)
    try:
        out = run_graph(svc, SIAInput(run_id="sf", task=str(root), max_generations=2, policy="llm"))
    finally:
        shutdown(svc)
    h = out["history"]
    assert [g.generation for g in h] == [1, 2] and h[1].lever == "scaffold" and h[1].accepted
    assert h[0].selection == pytest.approx(1 / 3) and h[1].selection == 1.0 and h[1].test == 1.0
    tiers = {name: {r["id"] for r in rows} for name, rows in task.splits().items()}
    # the selection run's agent saw (and predicted) the selection items only
    with open(svc.paths.gen(2) / "task_selection_submission.csv") as f:
        assert {r["id"] for r in csv.DictReader(f)} == tiers["selection"]
    items = [json.loads(line) for line in (svc.paths.gen(2) / "items.jsonl").read_text().splitlines()]
    assert {i["item_id"] for i in items if i["split"] == "test"} == tiers["test"]
    assert all(i["prediction"] and i["error"] is None for i in items)  # per-item outcomes from items[]
    prompts = "\n".join(prompts_sent(svc))
    assert not [i for i in tiers["test"] | tiers["selection"] if i in prompts]  # agents see feedback ids only


def test_an_evaluator_that_reports_no_number_stops_the_run(tmp_path):
    root = make_sia_folder_task(tmp_path / "sia")
    evaluate = root / "data" / "public" / "evaluate.py"
    evaluate.write_text(evaluate.read_text().replace("json.dumps(results)", 'json.dumps({"accuracy": "high"})'))
    svc = fake_services(tmp_path, "sf", [NO_EDIT], [])
    try:
        with pytest.raises(EvaluatorError, match="results.json has no number 'accuracy'"):
            run_graph(svc, SIAInput(run_id="sf", task=str(root), max_generations=1))
    finally:
        shutdown(svc)


HOSTILE_AGENT = '''import argparse, json, os, sys
p = argparse.ArgumentParser()
p.add_argument("--dataset_dir")
p.add_argument("--working_dir")
a = p.parse_args()
os.makedirs(a.working_dir, exist_ok=True)
found = {}
for path in (os.path.join(a.dataset_dir, "..", "private", "test.csv"), PRIVATE):
    try:
        found[path] = open(path).read()[:40]
    except OSError as exc:
        found[path] = type(exc).__name__
print("HOSTILE " + json.dumps(found), file=sys.stderr)
ids = [line.split(",")[0] for line in open(os.path.join(a.dataset_dir, "test.csv")).read().splitlines()[1:]]
with open(os.path.join(a.working_dir, "results.json"), "w") as f:
    json.dump({"accuracy": 1.0, "items": [{"id": i, "correct": True} for i in ids]}, f)
os.symlink(PRIVATE, os.path.join(a.working_dir, "submission.csv"))
'''


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid drop that keeps agents out of private data needs root")
def test_a_hostile_agent_gets_nothing_from_an_sia_folder(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="sia-hostile-folder-"))  # world-reachable, unlike tmp_path
    try:
        os.chmod(base, 0o755)
        root = make_sia_folder_task(base / "task")
        for p in [root, *root.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        private = root / "data" / "private" / "test.csv"
        (root / "reference" / "reference_target_agent.py").write_text(f"PRIVATE = {str(private)!r}\n" + HOSTILE_AGENT)
        svc = fake_services(tmp_path, "hf", [NO_EDIT], [json.dumps({"diagnosis": "x", "lever": "stop"})])
        try:
            out = run_graph(svc, SIAInput(run_id="hf", task=str(root), max_generations=2))
        finally:
            shutdown(svc)
        g1 = out["history"][0]
        assert g1.selection == 0.0 and g1.test == 0.0  # neither the forged results.json nor the link counts
        stderr = (svc.paths.gen(1) / "task_selection_stderr.log").read_text()
        found = json.loads(stderr.split("HOSTILE ", 1)[1].splitlines()[0])
        assert set(found.values()) <= {"PermissionError", "FileNotFoundError"}, found
        items = [json.loads(line) for line in (svc.paths.gen(1) / "items.jsonl").read_text().splitlines()]
        assert all("No submission.csv found" in i["error"] for i in items)
    finally:
        shutil.rmtree(base, ignore_errors=True)
