"""Trustworthy evaluation: keep-best's paired tests, protected-file fingerprints, a task's own
evaluator (and every way it can fail), and secrets that never reach a run's files."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from sia.config import KeepBestConfig
from sia.config import SandboxLimits
from sia.graph.state import SIAInput
from sia.nodes.keep_best import keep_best, mcnemar_p, paired_bootstrap_p
from sia.sandbox.runner import SubprocessSandbox
from sia.tasks.base import TaskError
from sia.tasks.csv_task import CsvTask
from sia.tasks.evaluator import EvaluatorError, run_evaluator
from tests.fakes import fake_config, fake_model_cache, fake_services, make_tiny_task, run_graph, shutdown

KEEP = json.dumps({"edit": "none"})
SHOTS = json.dumps({"edit": "retrieved-shots-2"})


def decide(lever: str) -> str:
    return json.dumps({"diagnosis": "it always answers the first label", "lever": lever})


@pytest.fixture(autouse=True)
def model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIA_CACHE_DIR", str(fake_model_cache(tmp_path / "cache")))


# --- keep-best ---------------------------------------------------------------------------------

def scores(values: str) -> dict[str, float]:
    return {f"i{k}": float(v) for k, v in enumerate(values)}


def test_first_candidate_is_accepted_without_a_test():
    v = keep_best(scores("000"), None, KeepBestConfig())
    assert v.accepted and v.p_value is None


@pytest.mark.parametrize("test", ["bootstrap", "mcnemar", "none"])
def test_a_worse_or_equal_candidate_is_rejected_by_every_test(test):
    cfg = KeepBestConfig(test=test)
    assert not keep_best(scores("1100"), scores("1100"), cfg).accepted
    assert not keep_best(scores("1000"), scores("1100"), cfg).accepted


def test_one_lucky_item_is_not_significant_but_a_clear_win_is():
    incumbent = scores("0" * 20 + "1" * 20)
    lucky = scores("1" + "0" * 19 + "1" * 20)
    clear = scores("1" * 8 + "0" * 12 + "1" * 20)
    for test in ("bootstrap", "mcnemar"):
        cfg = KeepBestConfig(test=test, confidence=0.9)
        assert not keep_best(lucky, incumbent, cfg).accepted
        verdict = keep_best(clear, incumbent, cfg)
        assert verdict.accepted and verdict.p_value < 0.1 and test in verdict.reason
    assert keep_best(lucky, incumbent, KeepBestConfig(test="none")).accepted


def test_mcnemar_is_the_exact_binomial_tail():
    assert mcnemar_p(3, 0) == pytest.approx(1 / 8)
    assert mcnemar_p(5, 1) == pytest.approx(7 / 64)
    assert mcnemar_p(0, 0) == 1.0


def test_bootstrap_is_reproducible_and_ordered():
    import numpy as np

    diffs = np.array([1.0] * 3 + [0.0] * 30 + [-1.0])
    assert paired_bootstrap_p(diffs, 2000, 0) == paired_bootstrap_p(diffs, 2000, 0)
    assert paired_bootstrap_p(diffs, 2000, 0) > paired_bootstrap_p(np.array([1.0] * 6 + [0.0] * 28), 2000, 0)


def test_min_improvement_and_mismatched_items():
    cfg = KeepBestConfig(test="none", min_improvement=0.5)
    assert not keep_best(scores("1100"), scores("1000"), cfg).accepted
    with pytest.raises(ValueError, match="same selection items"):
        keep_best(scores("11"), scores("111"), KeepBestConfig())


def test_rejected_candidate_is_recorded_and_the_next_starts_from_the_incumbent(tmp_path):
    """With a demanding confidence the (real) improvement, 4 of 6 selection items, is not enough."""
    task_dir = make_tiny_task(tmp_path / "task")
    cfg = fake_config(tmp_path, keep_best={"test": "mcnemar", "confidence": 0.99})
    svc = fake_services(tmp_path, "kb", [KEEP], [decide("scaffold"), SHOTS], config=cfg)
    try:
        out = run_graph(svc, SIAInput(run_id="kb", task=str(task_dir), max_generations=2, policy="scaffold-only"))
    finally:
        shutdown(svc)
    gen2 = out["history"][1]
    assert not gen2.accepted and gen2.selection == 1.0 and gen2.p_value > 0.01 and "mcnemar" in gen2.note
    assert out["incumbent"].generation == 1
    results = json.loads((svc.paths.gen(2) / "results.json").read_text())
    assert results["accepted"] is False and results["keep_best"]["p_value"] == gen2.p_value


# --- task folders and their evaluator ----------------------------------------------------------

EVALUATOR = '''import argparse, json
p = argparse.ArgumentParser()
p.add_argument("--predictions"); p.add_argument("--gold"); p.add_argument("--out")
a = p.parse_args()
pred, gold = json.load(open(a.predictions)), json.load(open(a.gold))
items = {k: float(pred.get(k) == g) for k, g in gold.items()}
json.dump({"score": sum(items.values()) / len(items), "items": items}, open(a.out, "w"))
'''

BROKEN_EVALUATORS = {
    "crashes": ("raise SystemExit('cannot read the gold file')", r"exited with code 1: cannot read the gold file"),
    "hangs": ("import time; time.sleep(60)", r"timed out after 2 s; .*evaluator_timeout_s"),
    "no score": ("import json, sys; json.dump({'items': {}}, open(sys.argv[-1], 'w'))", r"finite number 'score', got None"),
    "not a number": ("import json, sys; json.dump({'score': 'great'}, open(sys.argv[-1], 'w'))", r"got 'great'"),
    "nan": ("import json, sys; json.dump({'score': float('nan')}, open(sys.argv[-1], 'w'))", r"got nan"),
    "no output": ("pass", r"wrote no readable JSON"),
    "partial items": ("import json, sys; json.dump({'score': 1, 'items': {'x': 1}}, open(sys.argv[-1], 'w'))",
                      r"'items' must map every one of the 2 item ids"),
}


def task_with_evaluator(root: Path, code: str = EVALUATOR) -> Path:
    task_dir = make_tiny_task(root)
    (task_dir / "evaluate.py").write_text(code)
    spec = json.loads((task_dir / "sia_task.json").read_text())
    (task_dir / "sia_task.json").write_text(json.dumps({**spec, "evaluator": "evaluate.py", "evaluator_timeout_s": 2}))
    return task_dir


def test_an_evaluator_scores_per_item_in_its_own_process(tmp_path):
    task = CsvTask.load(task_with_evaluator(tmp_path / "t"))
    out = run_evaluator(task.root / task.spec.evaluator, task.spec.evaluator_timeout_s, SubprocessSandbox(), SandboxLimits(memory_mb=1024), os.sys.executable,
                        {"a": "x", "b": None}, {"a": "x", "b": "y"})
    assert out == {"a": 1.0, "b": 0.0}


@pytest.mark.parametrize("case", sorted(BROKEN_EVALUATORS))
def test_a_broken_evaluator_gets_one_clear_error_naming_the_file(tmp_path, case):
    code, message = BROKEN_EVALUATORS[case]
    task = CsvTask.load(task_with_evaluator(tmp_path / "t", code))
    with pytest.raises(EvaluatorError, match=message) as err:
        run_evaluator(task.root / task.spec.evaluator, task.spec.evaluator_timeout_s, SubprocessSandbox(), SandboxLimits(memory_mb=1024), os.sys.executable,
                      {"a": "x", "b": "y"}, {"a": "x", "b": "y"})
    assert str(task.root / "evaluate.py") in str(err.value)


@pytest.mark.parametrize("breakage, message", [
    (lambda d: (d / "evaluate.py").unlink(), r"evaluate\.py: missing; add the evaluator script"),
    (lambda d: shutil.rmtree(d / "data" / "private"), r"data/private: missing; the private test labels go there"),
])
def test_a_task_missing_its_evaluator_or_private_dir_is_refused(tmp_path, breakage, message):
    task_dir = task_with_evaluator(tmp_path / "t")
    breakage(task_dir)
    with pytest.raises(TaskError, match=message):
        CsvTask.load(task_dir)


def test_a_crashing_evaluator_stops_the_run_and_resume_after_the_fix_loses_nothing(tmp_path):
    from langgraph.checkpoint.sqlite import SqliteSaver

    task_dir = task_with_evaluator(tmp_path / "t", "raise SystemExit('boom')")
    svc = fake_services(tmp_path, "ev", [KEEP], [decide("scaffold"), SHOTS])
    inputs = SIAInput(run_id="ev", task=str(task_dir), max_generations=2, policy="scaffold-only")
    try:
        with SqliteSaver.from_conn_string(str(tmp_path / "ckpt.sqlite")) as saver:
            with pytest.raises(EvaluatorError, match="boom"):
                run_graph(svc, inputs, checkpointer=saver)
            (task_dir / "evaluate.py").write_text(EVALUATOR)
            # fixing a protected file between generations is the user's right; only changes while an agent runs flag
            out = run_graph(svc, None, checkpointer=saver)
    finally:
        shutdown(svc)
    assert [h.generation for h in out["history"]] == [1, 2]
    assert out["history"][0].selection == pytest.approx(1 / 3) and out["history"][1].selection == 1.0


# --- protected files -------------------------------------------------------------------------

class TamperingSandbox(SubprocessSandbox):
    """Stands in for a sandbox hole: while the agent runs, task.md is rewritten."""

    def __init__(self, task_dir: Path):
        super().__init__()
        self.task_dir = task_dir

    def run(self, argv, workdir, env, limits, readable=(), forward_ports=()):
        (self.task_dir / "task.md").write_text("# easy task: every answer is right\n")
        return super().run(argv, workdir, env, limits, readable, forward_ports)


def test_a_protected_file_changed_during_a_generation_flags_the_run_and_stops_it(tmp_path):
    task_dir = make_tiny_task(tmp_path / "task")
    svc = fake_services(tmp_path, "tamper", [KEEP], [decide("scaffold")], sandbox=TamperingSandbox(task_dir))
    try:
        out = run_graph(svc, SIAInput(run_id="tamper", task=str(task_dir), max_generations=3, policy="scaffold-only"))
    finally:
        shutdown(svc)
    assert out["flagged"] and "task.md" in out["flagged"]
    assert [(h.generation, h.accepted, h.selection) for h in out["history"]] == [(1, False, None)]
    assert out.get("incumbent") is None and out["history"][0].note.startswith("FLAGGED")
    summary = json.loads((svc.paths.root / "summary.json").read_text())
    assert summary["flagged"] == out["flagged"]
    with sqlite3.connect(svc.paths.run_db) as db:
        assert db.execute("select generation, why from flags").fetchall() == [(1, out["flagged"])]
        assert db.execute("select count(*) from item_results").fetchone()[0] == 0  # nothing scored
    assert "FLAGGED" in (svc.paths.root / "summary.md").read_text()


def test_a_run_leaves_the_task_folders_modes_alone(tmp_path):
    # The sandbox mounts none of the task folder, so nothing needs hiding by chmod any more
    # (before issue 15, Task.protect() made the user's folders 0700 on every evaluation).
    task_dir = make_tiny_task(tmp_path / "task")
    modes = {p: 0o755 for p in (task_dir, task_dir / "data" / "private")} | {task_dir / "task.md": 0o644}
    for path, mode in modes.items():
        path.chmod(mode)
    svc = fake_services(tmp_path, "modes", [KEEP], [decide("stop")])
    try:
        run_graph(svc, SIAInput(run_id="modes", task=str(task_dir), max_generations=1, policy="scaffold-only"))
    finally:
        shutdown(svc)
    assert {p: p.stat().st_mode & 0o777 for p in modes} == modes
    assert set(CsvTask.load(task_dir).fingerprint()) == {"task.md", "sia_task.json", "data/private/test.csv"}


def test_task_metadata_can_declare_the_feedback_and_selection_ids(tmp_path):
    task_dir = make_tiny_task(tmp_path / "task")
    spec = json.loads((task_dir / "sia_task.json").read_text())
    (task_dir / "splits.json").write_text(json.dumps({"feedback": ["tr-theft-0"], "selection": ["tr-theft-1", "tr-fraud-2"]}))
    (task_dir / "sia_task.json").write_text(json.dumps({**spec, "splits_file": "splits.json"}))
    splits = CsvTask.load(task_dir).splits()
    assert sorted(r["id"] for r in splits["selection"]) == ["tr-fraud-2", "tr-theft-1"]
    assert [r["id"] for r in splits["feedback"]] == ["tr-theft-0"]
    assert {"tr-theft-0", "tr-theft-1", "tr-fraud-2"}.isdisjoint(r["id"] for r in splits["pool"])
    (task_dir / "splits.json").write_text(json.dumps({"feedback": ["nope"], "selection": []}))
    with pytest.raises(TaskError, match=r"splits\.json: ids must be distinct training ids; unknown: \['nope'\]"):
        CsvTask.load(task_dir).splits()


def test_the_agent_gets_the_variables_its_task_declares_and_no_other(tmp_path, monkeypatch):
    task_dir = make_tiny_task(tmp_path / "task")
    spec = json.loads((task_dir / "sia_task.json").read_text())
    (task_dir / "sia_task.json").write_text(json.dumps({**spec, "agent_env": ["TINY_MODE"]}))
    agent = task_dir / "reference" / "target_agent.py"
    agent.write_text("import os, sys\nprint(sorted(os.environ), os.environ.get('TINY_MODE'), file=sys.stderr)\n"
                     + agent.read_text())
    monkeypatch.setenv("TINY_MODE", "strict")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-planted-parent-key")
    svc = fake_services(tmp_path, "env", [KEEP], [decide("stop")])
    try:
        run_graph(svc, SIAInput(run_id="env", task=str(task_dir), max_generations=1))
    finally:
        shutdown(svc)
    seen = (svc.paths.gen(1) / "task_selection_stderr.log").read_text().splitlines()[0]
    assert seen.endswith(" strict") and "TINY_MODE" in seen and "sk-planted" not in seen
    (task_dir / "sia_task.json").write_text(json.dumps({**spec, "agent_env": ["HF_TOKEN"]}))
    with pytest.raises(TaskError, match="agent_env names HF_TOKEN, which looks like a secret"):
        CsvTask.load(task_dir)


def test_a_run_config_from_before_keep_best_still_loads_with_its_old_rule(tmp_path):
    from sia.config import RunConfig

    old = RunConfig(runs_dir=tmp_path).model_dump(mode="json")
    del old["keep_best"]
    old["min_improvement"] = 0.02
    (tmp_path / "config.json").write_text(json.dumps(old))
    cfg = RunConfig.load(tmp_path / "config.json")
    assert cfg.keep_best.test == "none" and cfg.keep_best.min_improvement == 0.02
