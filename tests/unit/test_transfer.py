"""The parts of `sia transfer` below the command (tests/e2e/test_transfer.py drives the command):
verdicts and report shape, the reader, where incumbents' scaffolds are found, declared transfer
sets, the built-in transfer tasks, and that transfer calls never become training rows."""

from __future__ import annotations

import json

import pytest

from sia.checkpoints.paths import RunPaths
from sia.checkpoints.rundb import RunDB
from sia.finetune.records import reward_rows, sft_rows
from sia.nodes.common import sha
from sia.nodes.transfer import PURPOSE, TransferError, declared_transfers, incumbents_of, scaffold_file, write_report
from sia.records import ModelCall, ItemResult
from sia.tasks.csv_task import CsvTask
from sia.transfer_table import change, file_stem, read_transfers, transfer_markdown, transfer_report, verdict
from tests.fakes import make_tiny_task


def test_the_verdict_reads_only_the_interval():
    assert verdict(0.01, 0.5) == "transferred"
    assert verdict(-0.5, -0.01) == "loss on transfer"
    assert verdict(-0.1, 0.3) == verdict(0.0, 0.2) == verdict(0.0, 0.0) == "no clear change on transfer"
    assert verdict(0.1, 0.2, where="the task") == "gain on the task"
    assert verdict(-0.2, -0.1, where="the task") == "loss on the task"
    assert change({}, {"a": 1.0}, 1, 2) is None  # no item in common


def test_a_report_pairs_items_and_has_no_change_with_one_incumbent():
    incs = [{"generation": g, "lever": "meta", "adapter": None, "scaffold_sha": "s", "score": 0.0} for g in (1, 3, 5)]
    a, b, c = {"x": 0.0, "y": 0.0, "z": 1.0}, {"x": 1.0, "y": 1.0, "z": 1.0}, {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}
    report = transfer_report(incs, [a, b, c], [a, b, c], resamples=200)
    assert [(ch["from"], ch["to"]) for ch in report["changes"]] == [(1, 3), (3, 5)]
    assert report["changes"][0]["delta"] == pytest.approx(2 / 3) and report["changes"][1]["delta"] == -1.0
    assert report["changes"][1]["verdict"] == "loss on transfer" and report["changes"][1]["ci"] == [-1.0, -1.0]
    assert report["first_to_final"]["n"] == 3  # only the items both have ("w" is not in a)
    assert report["own_task"]["verdict"].endswith("on the task")
    assert transfer_report(incs, [a, b, c], [a, {}, {}])["own_task"] is None  # no stored test results
    one = transfer_report(incs[:1], [a], [a])
    assert one["changes"] == [] and one["first_to_final"] is None and one["own_task"] is None
    md = transfer_markdown({**one, "run_id": "r", "run_task": "tiny", "task": "t", "split": "test", "n": 3})
    assert "One incumbent only" in md and "| 1 | meta | base | 0.000 |" in md


def test_reports_are_read_back_and_other_files_ignored(tmp_path):
    assert read_transfers(tmp_path) == []
    report = {"run_id": "r", "run_task": "tiny", "task": "lawbench-mini-b", "split": "test", "n": 1,
              **transfer_report([{"generation": 1, "lever": "meta", "adapter": None, "scaffold_sha": "s",
                                  "score": 1.0}], [{"a": 1.0}], [{}])}
    item = ItemResult(run_id="r", generation=1, scaffold_sha="s", adapter="base", split="test", item_id="a", tag="t",
                      prediction="x", gold="x", score=1.0)
    write_report(tmp_path, file_stem(report["task"]), report, [item])
    (tmp_path / "transfer" / "notes.json").write_text('{"hello": 1}')
    assert read_transfers(tmp_path) == [report]
    assert json.loads((tmp_path / "transfer" / "lawbench-mini-b_items.jsonl").read_text())["item_id"] == "a"
    assert file_stem("../odd name/") == "odd-name" and file_stem("lawbench-3-3") == "lawbench-3-3"


def test_an_incumbents_scaffold_is_found_by_its_hash(tmp_path):
    paths = RunPaths(tmp_path, "r").create()
    code = "print('agent')\n"
    paths.gen(1).mkdir()
    (paths.gen(1) / "target_agent.py").write_text(code)
    db = RunDB(paths.run_db)
    for gen, lever, accepted in ((1, "meta", 1), (2, "scaffold", 0), (3, "weights", 1)):
        db.save_generation({"run_id": "r", "generation": gen, "lever": lever, "scaffold_sha": sha(code),
                            "adapter": "adapters/gen_3" if gen == 3 else None, "accepted": accepted, "test": 0.5})
    assert [(i["generation"], i["adapter"], i["own_test"]) for i in incumbents_of(paths)] == [
        (1, None, 0.5), (3, "adapters/gen_3", 0.5)]
    assert scaffold_file(paths, 3, sha(code)) == paths.gen(1) / "target_agent.py"  # a weights generation writes none
    with pytest.raises(TransferError, match="incomplete"):
        scaffold_file(paths, 3, sha("something else"))


def test_transfer_calls_never_become_training_rows(tmp_path):
    db = RunDB(tmp_path / "run.db")
    db.save_items([ItemResult(run_id="r", generation=1, scaffold_sha="s", adapter="base", split="feedback",
                              item_id="a", tag="g1t00-q00000", prediction="theft", gold="theft", score=1.0)])
    fmt = {"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": {
        "label": {"type": "string", "enum": ["theft", "fraud"]}}}}}
    for purpose, content in ((PURPOSE, "TRANSFER"), ("task", "TASK")):  # same generation, same tag
        db.record_call(ModelCall(run_id="r", generation=1, adapter_version=None, item="g1t00-q00000", purpose=purpose,
                                 messages=[{"role": "user", "content": content}], response_format=fmt,
                                 completion='{"label": "theft"}', prompt_tokens=3, completion_tokens=3, latency_s=0.1))
    assert [r["messages"][0]["content"] for r in sft_rows(db, "r")[0]] == ["TASK"]
    assert [r["messages"][0]["content"] for r in reward_rows(db, "r")[0]] == ["TASK"]


def test_declared_transfer_sets_are_read_from_sia_task_json(tmp_path):
    root = make_tiny_task(tmp_path / "tiny")
    assert CsvTask.load(root).transfer_tasks == () and declared_transfers(CsvTask.load(root)) == []
    (tmp_path / "tiny" / "other").mkdir()
    spec = json.loads((root / "sia_task.json").read_text())
    (root / "sia_task.json").write_text(json.dumps({**spec, "transfer_tasks": ["lawbench-mini-b", "other"]}))
    task = CsvTask.load(root)
    assert task.transfer_tasks == ("lawbench-mini-b", "other")
    assert declared_transfers(task) == ["lawbench-mini-b", str((root / "other").resolve())]  # a folder beside it


def test_built_in_tasks_declare_their_transfer_sets(tmp_path):
    from sia.tasks.lawbench_mini.prepare import SPECS
    from sia.tasks.registry import BUILTIN, PACKAGED_SPECS, REFERENCE_AGENTS, TRANSFER_TASKS, refresh_spec
    from sia.tasks.scrna_denoise.prepare import REFERENCE_AGENT as SCRNA_AGENT
    from sia.tasks.sia_folder import SIAFolderTask

    assert TRANSFER_TASKS == {"lawbench-mini": ("lawbench-mini-b",), "scrna-denoise": ("scrna-simulated",)}
    assert all(name in BUILTIN for names in TRANSFER_TASKS.values() for name in names)
    assert PACKAGED_SPECS["lawbench-mini"]["transfer_tasks"] == ["lawbench-mini-b"] == SPECS["lawbench-mini"]["transfer_tasks"]
    assert "transfer_tasks" not in PACKAGED_SPECS["lawbench-mini-b"]
    assert BUILTIN["scrna-denoise"].keywords["transfer_tasks"] == ("scrna-simulated",)
    assert REFERENCE_AGENTS["scrna-simulated"] == SCRNA_AGENT
    task = SIAFolderTask.load(BUILTIN["scrna-simulated"](tmp_path / "sim"))  # about 2 s: 300 cells x 3000 genes
    assert task.name == "scrna-simulated" and task.transfer_tasks == ()
    before = json.loads((task.root / "sia_task.json").read_text())
    refresh_spec(task.root / "sia_task.json", {"transfer_tasks": ["scrna-simulated"]})  # what a stale cached copy gets
    after = json.loads((task.root / "sia_task.json").read_text())
    assert after == {**before, "transfer_tasks": ["scrna-simulated"]}
    assert SIAFolderTask.load(task.root).transfer_tasks == ("scrna-simulated",)
