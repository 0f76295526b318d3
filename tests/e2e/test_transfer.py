"""`sia transfer` end to end, offline: a short run on the tiny task (generation 1 the reference
agent, then LoRA generations through the FakeTrainer; the fake backend answers by keyword when an
adapter is served), then its incumbents scored on a second task imported from a synthetic
LawBench 3-3 file the way `sia tasks import-lawbench` imports one. The report's numbers are
recomputed here from the per-item files and run.db, and the run's own item cache must not change."""

from __future__ import annotations

import json
import sqlite3

import pytest

from sia.cli.main import main
from sia.compare_table import bootstrap_ci
from sia.transfer_table import read_transfers, verdict
from tests.fakes import KEYWORDS, OBJECTS, fake_config, fake_model_cache, fake_services_for, make_tiny_task, shutdown

META_KEEP = json.dumps({"edit": "none"})
WEIGHTS = json.dumps({"diagnosis": "always the first label", "lever": "weights"})
TRANSFER_LABELS = ["arson", "bribery", "smuggling", "theft"]  # arson sorts first: the base model's every answer


def lawbench_3_3(path, n: int = 40):
    """A LawBench charge-prediction file (3-3 format) whose facts carry the fake backend's keywords;
    every seventh case has two charges."""
    items = []
    for i in range(n):
        first, second = TRANSFER_LABELS[i % 4], TRANSFER_LABELS[(i + 1) % 4]
        charges = [first, second] if i % 7 == 0 else [first]
        items.append({"instruction": "请预测罪名", "answer": "罪名:" + ";".join(charges),
                      "question": f"Facts {i}: the accused {KEYWORDS[first]} {OBJECTS[i % len(OBJECTS)]}."})
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return path


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, " ".join(out.split()), " ".join(err.split())  # rich wraps long lines


def table_rows(runs, run_id: str, table: str) -> list[tuple]:
    with sqlite3.connect(runs / run_id / "run.db") as db:
        return db.execute(f"select * from {table} order by 1, 2, 3, 4, 5").fetchall()


@pytest.fixture
def finished_run(tmp_path, monkeypatch, capsys):
    """(runs dir, run id, services made) of a 3-generation `sia run` on the tiny task, whose task
    declares the imported LawBench task `lb-transfer` as its transfer set."""
    monkeypatch.setenv("SIA_CACHE_DIR", str(fake_model_cache(tmp_path / "cache")))
    code, out, err = cli(capsys, "tasks", "import-lawbench", str(lawbench_3_3(tmp_path / "3-3.json")),
                         "--name", "lb-transfer")
    assert code == 0, err
    task = make_tiny_task(tmp_path / "tiny")
    spec = json.loads((task / "sia_task.json").read_text())
    (task / "sia_task.json").write_text(json.dumps({**spec, "transfer_tasks": ["lb-transfer"]}))
    services_for = fake_services_for(tmp_path, lambda run_id: ([META_KEEP] * 3, [WEIGHTS] * 3))
    monkeypatch.setattr("sia.nodes.services.services_for", services_for)
    config = tmp_path / "config.json"
    config.write_text(fake_config(tmp_path).model_dump_json())
    runs = tmp_path / "runs"
    code, out, err = cli(capsys, "run", "--task-dir", str(task), "--generations", "3", "--policy", "llm",
                         "--run-id", "r", "--config", str(config), "--runs-dir", str(runs))
    assert code == 0, err
    yield runs, "r", task
    for svc in services_for.made.values():
        shutdown(svc)


def test_transfer_scores_each_incumbent_and_leaves_the_run_cache_alone(finished_run, capsys):
    runs, run_id, task = finished_run
    gens = table_rows(runs, run_id, "generations")  # (run_id, generation, lever, adapter, ...)
    accepted = [g[1] for g in gens if g[8]]
    assert accepted[:2] == [1, 2] and len(gens) == 3  # the reference agent, then an adapter that helps
    items_before, calls_before = table_rows(runs, run_id, "item_results"), len(table_rows(runs, run_id, "model_calls"))

    code, out, err = cli(capsys, "transfer", run_id, "--runs-dir", str(runs))  # the task's declared transfer set
    assert code == 0, err
    report = json.loads((runs / run_id / "transfer" / "lb-transfer.json").read_text())
    assert (report["task"], report["run_task"], report["split"], report["metric"]) == ("lb-transfer", "tiny", "test", "mean F1")
    assert report["n"] == 8 and report["isolation"] in ("bwrap", "bwrap+cgroups", "unsafe")
    incs = report["incumbents"]
    assert [i["generation"] for i in incs] == accepted
    assert incs[0]["adapter"] is None and incs[1]["adapter"] == "adapters/gen_2" and incs[1]["lever"] == "weights"
    assert incs[0]["scaffold_sha"] == incs[1]["scaffold_sha"]  # the adapter is served under the incumbent's scaffold
    assert incs[1]["score"] > incs[0]["score"]  # the adapter was served on the transfer task too

    # every number recomputed from the per-item results
    rows = [json.loads(line) for line in (runs / run_id / "transfer" / "lb-transfer_items.jsonl").read_text().splitlines()]
    by_gen = {g: {r["item_id"]: r["score"] for r in rows if r["generation"] == g} for g in accepted}
    assert all(len(scores) == 8 for scores in by_gen.values()) and {r["split"] for r in rows} == {"test"}
    for inc in incs:
        assert inc["score"] == pytest.approx(sum(by_gen[inc["generation"]].values()) / 8)
    assert len(report["changes"]) == len(accepted) - 1
    for ch in report["changes"] + [report["first_to_final"]]:
        a, b = by_gen[ch["from"]], by_gen[ch["to"]]
        diffs = [b[i] - a[i] for i in sorted(a)]
        assert ch["delta"] == pytest.approx(sum(diffs) / len(diffs)) and ch["n"] == 8
        assert ch["ci"] == pytest.approx(list(bootstrap_ci(diffs)))
        assert ch["ci"][0] <= ch["delta"] <= ch["ci"][1] and ch["verdict"] == verdict(*ch["ci"])
    first = report["changes"][0]
    assert (first["from"], first["to"], first["verdict"]) == (1, 2, "transferred")
    assert (report["first_to_final"]["from"], report["first_to_final"]["to"]) == (accepted[0], accepted[-1])

    own = report["own_task"]  # the same first -> final change on the run's own test split, from run.db
    test_scores = {g: {r[5]: r[9] for r in items_before if r[4] == "test" and r[1] == g} for g in accepted}
    own_diffs = [test_scores[accepted[-1]][i] - test_scores[accepted[0]][i] for i in sorted(test_scores[accepted[0]])]
    assert own["n"] == 7 and own["delta"] == pytest.approx(sum(own_diffs) / 7)
    assert own["ci"] == pytest.approx(list(bootstrap_ci(own_diffs))) and own["verdict"] == "gain on the task"

    # nothing of the transfer entered the run's item cache; its calls are recorded as "transfer"
    assert table_rows(runs, run_id, "item_results") == items_before
    calls = table_rows(runs, run_id, "model_calls")[calls_before:]
    assert calls and {c[5] for c in calls} == {"transfer"}
    md = (runs / run_id / "transfer" / "lb-transfer.md").read_text()
    assert "| 2 | weights | adapters/gen_2 |" in md and "transferred" in md and "gain on the task" in md
    assert "transferred" in out and "gain on the task" in out and "lb-transfer.json" in out
    assert [r["task"] for r in read_transfers(runs / run_id)] == ["lb-transfer"]
    # a verdict on the gain: its guards (checked by keep-best) and its transfer, in summary.md and `sia show`
    summary = (runs / run_id / "summary.md").read_text()
    line = next(x for x in summary.splitlines() if x.startswith("| 2 | weights | 1 | +"))
    assert "| held (macro_recall) |" in line and line.endswith(f"{first['delta']:+.3f} [{first['ci'][0]:+.3f}, "
                                                                 f"{first['ci'][1]:+.3f}] transferred |")
    assert "Transfer to `lb-transfer` (test split, 8 items): first -> final incumbent" in summary
    code, out, err = cli(capsys, "show", run_id, "--runs-dir", str(runs))
    assert code == 0 and "Verdict on each accepted change" in out and "transfer: lb-transfer" in out
    assert "held (macro_recall)" in out and "transferred" in out

    # again: recomputed to the same numbers, still nothing cached
    code, _, err = cli(capsys, "transfer", run_id, "--task", "lb-transfer", "--runs-dir", str(runs))
    assert code == 0, err
    again = json.loads((runs / run_id / "transfer" / "lb-transfer.json").read_text())
    assert {k: v for k, v in again.items() if k != "created"} == {k: v for k, v in report.items() if k != "created"}
    assert table_rows(runs, run_id, "item_results") == items_before
    assert not list((runs / run_id / "transfer").glob(".*"))  # no temporary file left


def test_transfer_refusals(finished_run, capsys):
    runs, run_id, task = finished_run
    assert "no run 'nope'" in cli(capsys, "transfer", "nope", "--runs-dir", str(runs))[2]
    code, _, err = cli(capsys, "transfer", run_id, "--task", "no-such-task", "--runs-dir", str(runs))
    assert code == 1 and "unknown task 'no-such-task'" in err
    code, _, err = cli(capsys, "transfer", run_id, "--task-dir", str(task), "--runs-dir", str(runs))
    assert code == 1 and "is the run's own task" in err and "--task-dir" in err
    code, _, err = cli(capsys, "transfer", run_id, "--task", "lb-transfer", "--limit", "0", "--runs-dir", str(runs))
    assert code == 1 and "--limit must be at least 1" in err

    # a run with no accepted generation yet: its folder and config, no incumbent
    empty = runs / "empty"
    empty.mkdir()
    for name in ("config.json", "inputs.json"):
        (empty / name).write_text((runs / run_id / name).read_text().replace('"r"', '"empty"'))
    with sqlite3.connect(runs / run_id / "run.db") as src, sqlite3.connect(empty / "run.db") as dst:
        src.backup(dst)
        dst.execute("update generations set run_id = 'empty', accepted = 0")
    code, _, err = cli(capsys, "transfer", "empty", "--runs-dir", str(runs))
    assert code == 1 and "run 'empty' has no accepted generation yet" in err and "sia resume empty" in err
    assert not (empty / "transfer").exists() and not (runs / run_id / "transfer").exists()


def test_a_run_with_one_incumbent_reports_its_score_and_no_change(finished_run, capsys):
    runs, run_id, task = finished_run
    with sqlite3.connect(runs / run_id / "run.db") as db:
        db.execute("update generations set accepted = 0 where generation > 1")
    code, out, err = cli(capsys, "transfer", run_id, "--task", "lb-transfer", "--limit", "3", "--runs-dir", str(runs))
    assert code == 0, err
    report = read_transfers(runs / run_id)[0]
    assert [i["generation"] for i in report["incumbents"]] == [1] and report["n"] == 3 and report["limit"] == 3
    assert report["changes"] == [] and report["first_to_final"] is None and report["own_task"] is None
    assert "One incumbent only" in out and "One incumbent only" in (runs / run_id / "transfer" / "lb-transfer.md").read_text()


@pytest.mark.slow  # reads the sia-agent wheel (downloaded once into the cache)
def test_lawbench_mini_b_is_the_next_twelve_labels_with_no_case_in_common(tmp_path):
    import csv
    from collections import Counter

    from sia.tasks.csv_task import CsvTask
    from sia.tasks.lawbench.prepare import read_split
    from sia.tasks.registry import BUILTIN

    mini, b = (CsvTask.load(BUILTIN[name](tmp_path / name)) for name in ("lawbench-mini", "lawbench-mini-b"))
    assert (mini.name, b.name) == ("lawbench-mini", "lawbench-mini-b")
    assert len(mini.classes) == len(b.classes) == 12 and not set(mini.classes) & set(b.classes)
    classes, train, _, gold = read_split()
    n_train, n_test = Counter(r["label"] for r in train), Counter(gold.values())
    qualifying = [c for c in classes if n_train[c] >= 30 and n_test[c] >= 5]
    assert mini.classes == qualifying[:12] and b.classes == qualifying[12:24]  # the same criteria, the next block

    def ids(task, rel):
        with open(task.root / rel, encoding="utf-8") as f:
            return {r["id"] for r in csv.DictReader(f)}

    for rel in ("data/public/train.csv", "data/public/test.csv"):
        assert ids(b, rel) and not ids(mini, rel) & ids(b, rel)
    splits = b.splits()
    assert {name: len(rows) for name, rows in splits.items()} == {"feedback": 24, "selection": 108, "pool": 228, "test": 60}
    assert all(len(r["text"]) <= 150 for r in splits["test"])
    assert mini.transfer_tasks == ("lawbench-mini-b",) and b.transfer_tasks == ()
    assert (b.root / "task.md").read_text(encoding="utf-8").startswith("# lawbench-mini-b ")
