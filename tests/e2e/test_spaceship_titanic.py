"""spaceship-titanic (MLE-bench's split from the `sia-agent==0.6.0` wheel) and `sia tasks
import-mlebench`: the table task kind, its scores on known submissions, and a loop run on it."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from sia.cli.main import main
from sia.graph.state import SIAInput
from sia.tasks.base import TaskError
from sia.tasks.csv_task import CsvTask
from sia.tasks.mlebench import import_mlebench
from sia.tasks.registry import resolve_task
from tests.fakes import fake_model_cache, fake_services, run_graph, shutdown


@pytest.fixture(scope="module")
def spaceship():
    return resolve_task("spaceship-titanic")


def test_the_mlebench_split_is_laid_out(spaceship):
    splits = spaceship.splits()
    assert spaceship.classes == ["False", "True"] and spaceship.submission_columns == ("PassengerId", "Transported")
    assert sum(len(splits[s]) for s in ("feedback", "selection", "pool")) == 7823 and len(splits["test"]) == 870
    assert (len(splits["feedback"]), len(splits["selection"])) == (24, 36)


def test_the_all_false_sample_submission_scores_0_50345(capsys, spaceship):
    sample = spaceship.root / "data" / "public" / "sample_submission.csv"
    assert main(["eval", "--task", "spaceship-titanic", "--submission", str(sample)]) == 0
    assert "accuracy 0.50345 on 870 test items" in capsys.readouterr().out


def test_perfect_and_inverted_submissions(tmp_path, capsys, spaceship):
    rows = spaceship.splits()["test"]
    for name, flip, expected in (("perfect", False, "1.00000"), ("inverted", True, "0.00000")):
        with open(tmp_path / f"{name}.csv", "w", newline="") as f:
            csv.writer(f).writerows([("PassengerId", "Transported")] +
                                    [(r["id"], str((r["label"] == "True") != flip)) for r in rows])
        assert main(["eval", "--task", "spaceship-titanic", "--submission", str(tmp_path / f"{name}.csv")]) == 0
        assert f"accuracy {expected} on 870" in capsys.readouterr().out


def test_agents_see_every_column_but_the_label(tmp_path, spaceship):
    sp = spaceship.splits(limit=3)
    tags = spaceship.write_view(tmp_path / "view", {"selection": sp["selection"]}, sp["pool"], salt="s", prefix="x-")
    with open(tmp_path / "view" / "test.csv") as f:
        test = list(csv.DictReader(f))
    assert "Transported" not in test[0] and {"HomePlanet", "CryoSleep", "Cabin", "Age"} <= set(test[0])
    assert [r["PassengerId"] for r in test] == list(tags)  # opaque tags, not passenger ids
    assert (tmp_path / "view" / "sample_submission.csv").read_text() == "PassengerId,Transported\n"


def test_sia_run_reaches_generation_2_on_spaceship(tmp_path, monkeypatch, spaceship):
    monkeypatch.setenv("SIA_CACHE_DIR", str(fake_model_cache(tmp_path / "cache")))
    svc = fake_services(tmp_path, "st", [json.dumps({"edit": "none"})],
                        [json.dumps({"diagnosis": "no examples", "lever": "scaffold"}), json.dumps({"edit": "retrieved-shots-2"})])
    try:
        out = run_graph(svc, SIAInput(run_id="st", task=str(spaceship.root), max_generations=2, policy="llm", limit=6))
    finally:
        shutdown(svc)
    assert [h.generation for h in out["history"]] == [1, 2] and out["history"][0].selection is not None
    items = [json.loads(line) for line in (svc.paths.gen(1) / "items.jsonl").read_text().splitlines()]
    assert {i["prediction"] for i in items} <= {"False", "True"} and not any(i["error"] for i in items)


def test_import_mlebench_folder_and_its_errors(tmp_path, spaceship):
    comp = tmp_path / "comp"
    for rel in ("public/train.csv", "public/test.csv", "public/sample_submission.csv", "private/test.csv"):
        (comp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(spaceship.root / "data" / rel, comp / rel)
    task = CsvTask.load(import_mlebench(comp, tmp_path / "tasks" / "comp", "comp"))
    assert task.spec.kind == "csv-table" and task.spec.label_column == "Transported"
    (comp / "grader.json").write_text(json.dumps({"metric": "rmse", "id_column": "PassengerId", "label_column": "Age"}))
    with pytest.raises(TaskError, match="metric 'rmse' is not implemented"):
        import_mlebench(comp, tmp_path / "tasks" / "comp2", "comp2")
    (comp / "private" / "test.csv").unlink()
    with pytest.raises(TaskError, match=r"private/test\.csv: missing"):
        import_mlebench(comp, tmp_path / "tasks" / "comp3", "comp3")
